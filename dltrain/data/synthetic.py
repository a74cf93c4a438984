"""Random inputs of any shape labelled by a fixed random linear teacher: for benchmarks and tests."""
from __future__ import annotations

import math

import torch

from dltrain.data import DATASETS, DataBundle, Split, check_sizes
from dltrain.registry import check


@DATASETS.register("synthetic")
def build_synthetic(*, seed: int, shape: list[int], num_classes: int = 10, train_size: int = 1000,
                    val_size: int = 200, test_size: int = 200, data_seed: int | None = None) -> DataBundle:
    """x ~ N(0, 1) of `shape`; y = argmax(W x) for a random W seeded by `data_seed` (default: `seed`)."""
    check(len(shape) > 0 and all(s > 0 for s in shape), f"data.shape={shape} must be positive sizes")
    check(num_classes >= 2, f"data.num_classes={num_classes} must be >= 2")
    check_sizes(train_size, val_size, test_size)
    gen = torch.Generator().manual_seed(seed if data_seed is None else data_seed)
    features = math.prod(shape)
    teacher = torch.randn(features, num_classes, generator=gen) / math.sqrt(features)
    splits = []
    for n in (train_size, val_size, test_size):
        x = torch.randn(n, *shape, generator=gen)
        splits.append(Split(x, (x.reshape(n, features) @ teacher).argmax(dim=1)))
    return DataBundle(*splits, task="classification", num_outputs=num_classes,
                      preprocessing={"data": "synthetic", "input": "array"})  # inputs as they are
