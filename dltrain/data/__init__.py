"""Datasets. Each file in this folder registers its builders with `@DATASETS.register(name)`.

A builder is `build(*, seed: int, **typed_config_kwargs) -> DataBundle`: whole splits as tensors, which
the engine moves to the training device once and batches by indexing (no DataLoader on the hot path).
Adding a dataset is a new file here plus a YAML in conf/data/: every module here is imported automatically.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

import torch

from dltrain.registry import Registry, check

DATASETS = Registry("data")


@dataclass
class Split:
    """One split held in memory: inputs `x` (N, *sample_shape) and targets `y` (N, ...)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class DataBundle:
    """What a dataset builder returns: the three splits and what the model/task need to know."""

    train: Split
    val: Split
    test: Split
    task: str = "classification"  # which task (tasks.py) trains on it
    num_outputs: int = 10  # classes for classification, target size for regression
    meta: dict = field(default_factory=dict)  # e.g. vocabulary of a text corpus, class names

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def check_sizes(train_size: int, val_size: int, test_size: int) -> None:
    """Split sizes of generated data sets (samples)."""
    check(train_size > 0 and val_size >= 0 and test_size >= 0,
          f"data sizes train={train_size}, val={val_size}, test={test_size} must be >= 0, with train_size > 0")


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> tuple[torch.Tensor, ...]:
    """A seeded random train/val/test partition of range(n) by fractions (which must sum to <= 1)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    rest = n - n_train - n_val
    n_test = rest if abs(sum(fractions) - 1.0) < 1e-9 else min(int(round(fractions[2] * n)), rest)  # no lost sample
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:n_train + n_val + n_test]


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
