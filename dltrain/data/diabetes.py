"""scikit-learn's diabetes regression set (442 patients, 10 features, disease progression after a year)."""
from __future__ import annotations

import torch

from dltrain.data import DATASETS, DataBundle, Split, check_fractions, split_indices, standardize


@DATASETS.register("diabetes")
def build_diabetes(*, seed: int, fractions: list[float] = (0.6, 0.2, 0.2),
                   standardize_target: bool = True) -> DataBundle:
    """Features standardized by the train split; the target too when `standardize_target` (MSE then reads
    in units of the target's standard deviation: 1.0 = predicting the mean)."""
    from sklearn.datasets import load_diabetes

    raw = load_diabetes()
    x = torch.tensor(raw.data, dtype=torch.float32)
    y = torch.tensor(raw.target, dtype=torch.float32).unsqueeze(1)
    indices = split_indices(len(x), check_fractions(list(fractions)), seed)
    xs = standardize(*(x[i] for i in indices))  # one feature = one channel of (N, 10)
    ys = standardize(*(y[i] for i in indices)) if standardize_target else tuple(y[i] for i in indices)
    return DataBundle(*(Split(a, b) for a, b in zip(xs, ys)), task="regression", num_outputs=1)
