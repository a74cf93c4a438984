"""scikit-learn's diabetes regression set (442 patients, 10 features, disease progression after a year)."""
from __future__ import annotations

import torch

from dltrain.data import DATASETS, DataBundle, Split, split_indices
from dltrain.data.digits import check_fractions


@DATASETS.register("diabetes")
def build_diabetes(*, seed: int, fractions: list[float] = (0.6, 0.2, 0.2), standardize_target: bool = True) -> DataBundle:
    """Features standardized by the train split; the target too when `standardize_target` (MSE then reads
    in units of the target's standard deviation: 1.0 = predicting the mean)."""
    from sklearn.datasets import load_diabetes

    raw = load_diabetes()
    x = torch.tensor(raw.data, dtype=torch.float32)
    y = torch.tensor(raw.target, dtype=torch.float32).unsqueeze(1)
    train_idx, val_idx, test_idx = split_indices(len(x), check_fractions(list(fractions)), seed)
    x = (x - x[train_idx].mean(0)) / x[train_idx].std(0)
    if standardize_target:
        y = (y - y[train_idx].mean()) / y[train_idx].std()
    splits = [Split(x[i], y[i]) for i in (train_idx, val_idx, test_idx)]
    return DataBundle(*splits, task="regression", num_outputs=1)
