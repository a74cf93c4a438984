"""scikit-learn's diabetes regression set (442 patients, 10 features, disease progression after a year)."""
from __future__ import annotations

import torch

from dltrain.data import DATASETS, DataBundle, Fractions, Split, check_fractions, scaling, split_indices, train_stats


@DATASETS.register("diabetes", task="regression")
def build_diabetes(*, seed: int, fractions: Fractions = (0.6, 0.2, 0.2),
                   standardize_target: bool = True) -> DataBundle:
    """Features standardized by the train split; the target too when `standardize_target` (MSE then reads
    in units of the target's standard deviation: 1.0 = predicting the mean)."""
    from sklearn.datasets import load_diabetes

    raw = load_diabetes()
    x = torch.tensor(raw.data, dtype=torch.float32)
    y = torch.tensor(raw.target, dtype=torch.float32).unsqueeze(1)
    indices = split_indices(len(x), check_fractions(list(fractions)), seed)
    mean, std = train_stats(x[indices[0]])  # one feature = one channel of (N, 10)
    prep = {"data": "diabetes", "input": "array", **scaling(mean, std)}
    ys = tuple(y[i] for i in indices)
    if standardize_target:
        y_mean, y_std = train_stats(ys[0])
        ys = tuple((t - y_mean) / y_std for t in ys)
        prep["target"] = scaling(y_mean, y_std)  # predictions are y * std + mean in the target's own units
    return DataBundle(*(Split((x[i] - mean) / std, t) for i, t in zip(indices, ys)), task="regression",
                      num_outputs=1, preprocessing=prep)
