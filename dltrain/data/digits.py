"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): no download, ever."""
from __future__ import annotations

import torch

from dltrain.data import DATASETS, DataBundle, Split, split_indices
from dltrain.registry import check


def check_fractions(fractions: list[float]) -> tuple[float, float, float]:
    check(len(fractions) == 3 and all(f >= 0 for f in fractions) and 0 < sum(fractions) <= 1.0 + 1e-9
          and fractions[0] > 0, f"data.fractions={fractions} must be three train/val/test fractions "
          "with train > 0 and a sum <= 1, e.g. [0.6, 0.2, 0.2]")
    return fractions[0], fractions[1], fractions[2]


def standardized_splits(x: torch.Tensor, y: torch.Tensor, fractions: list[float], seed: int) -> tuple[Split, ...]:
    """Split by seeded fractions, then scale by the train split's mean and std (one value per channel)."""
    train_idx, val_idx, test_idx = split_indices(len(x), check_fractions(fractions), seed)
    dims = [0] + list(range(2, x.dim()))  # all but the channel axis
    mean = x[train_idx].mean(dim=dims, keepdim=True)[0]
    std = x[train_idx].std(dim=dims, keepdim=True)[0].clamp_min(1e-8)
    return tuple(Split((x[i] - mean) / std, y[i]) for i in (train_idx, val_idx, test_idx))


@DATASETS.register("digits")
def build_digits(*, seed: int, fractions: list[float] = (0.6, 0.2, 0.2)) -> DataBundle:
    """Images as (1, 8, 8) float tensors standardized with the train split's statistics."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(raw.target, dtype=torch.long)
    train, val, test = standardized_splits(x, y, list(fractions), seed)
    return DataBundle(train, val, test, task="classification", num_outputs=10)
