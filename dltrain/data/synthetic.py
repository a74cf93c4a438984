"""Random inputs of any shape labelled by a fixed random linear teacher: for benchmarks and tests."""
from __future__ import annotations

import math
from typing import Annotated

import torch

from dltrain.core.rules import NonEmpty, NonNegative, Positive, Range, Seed
from dltrain.data import DATASETS, DataBundle, Split


@DATASETS.register("synthetic", task="classification")
def build_synthetic(*, seed: int, shape: Annotated[list[int], Positive, NonEmpty],
                    num_classes: Annotated[int, Range(ge=2)] = 10, train_size: Annotated[int, Positive] = 1000,
                    val_size: Annotated[int, NonNegative] = 200, test_size: Annotated[int, NonNegative] = 200,
                    data_seed: Annotated[int, Seed] | None = None) -> DataBundle:
    """x ~ N(0, 1) of `shape`; y = argmax(W x) for a random W seeded by `data_seed` (default: `seed`)."""
    gen = torch.Generator().manual_seed(seed if data_seed is None else data_seed)
    features = math.prod(shape)
    teacher = torch.randn(features, num_classes, generator=gen) / math.sqrt(features)
    splits = []
    for n in (train_size, val_size, test_size):
        x = torch.randn(n, *shape, generator=gen)
        splits.append(Split(x, (x.reshape(n, features) @ teacher).argmax(dim=1)))
    return DataBundle(*splits, task="classification", num_outputs=num_classes,
                      preprocessing={"data": "synthetic", "input": "array"})  # inputs as they are
