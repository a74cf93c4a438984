"""Sequence tasks generated here, deterministic by seed: the adding problem, digits read row by row, and
sine-wave forecasting."""
from __future__ import annotations

import math
from typing import Annotated, Any

import torch

from dltrain.core.registry import check
from dltrain.core.rules import NonNegative, Positive, Range
from dltrain.data import DATASETS, DataBundle, Fractions, Split, standardized_splits
from dltrain.data.digits import DIGIT_NAMES, digit_images


def adding_problem(n: int, length: int, gen: torch.Generator) -> Split:
    """Each step holds (value ~ U(0,1), marker); one marker in each half; target = sum of the two marked
    values. Predicting the mean (1.0) gives MSE 1/6 ~ 0.167: the chance level."""
    values = torch.rand(n, length, generator=gen)
    first = torch.randint(0, length // 2, (n,), generator=gen)
    second = torch.randint(length // 2, length, (n,), generator=gen)
    markers = torch.zeros(n, length)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]
    return Split(torch.stack([values, markers], dim=2), target.unsqueeze(1))


@DATASETS.register("adding", task="regression")
def build_adding(*, seed: int, length: Annotated[int, Range(ge=2)] = 50, train_size: Annotated[int, Positive] = 5000,
                 val_size: Annotated[int, NonNegative] = 1000,
                 test_size: Annotated[int, NonNegative] = 1000) -> DataBundle:
    """`length` time steps per sequence; split sizes in samples."""
    gen = torch.Generator().manual_seed(seed)
    splits = [adding_problem(n, length, gen) for n in (train_size, val_size, test_size)]
    return DataBundle(*splits, task="regression", num_outputs=1, chance_mse=1 / 6)


@DATASETS.register("digit_rows", task="classification")
def build_digit_rows(*, seed: int, fractions: Fractions = (0.6, 0.2, 0.2), stratify: bool = False) -> DataBundle:
    """scikit-learn's 8x8 digits as sequences of 8 rows of 8 pixels (N, 8, 8): sequence classification."""
    images, target = digit_images()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1)  # channel axis for the shared scaling
    train, val, test = standardized_splits(x, torch.tensor(target, dtype=torch.long), list(fractions), seed, stratify)
    return DataBundle(*(Split(s.x.squeeze(1), s.y) for s in (train, val, test)), task="classification",
                      num_outputs=10, class_names=list(DIGIT_NAMES))


def check_periods(**options: Any) -> None:
    check(options["min_period"] <= options["max_period"], f"data.min_period={options['min_period']} must be <= "
          f"data.max_period={options['max_period']} (samples)")


@DATASETS.register("sine", check=check_periods, task="regression")
def build_sine(*, seed: int, window: Annotated[int, Positive] = 32, horizon: Annotated[int, Positive] = 1,
               min_period: Annotated[float, Positive] = 8.0, max_period: Annotated[float, Positive] = 32.0,
               train_size: Annotated[int, Positive] = 4000, val_size: Annotated[int, NonNegative] = 500,
               test_size: Annotated[int, NonNegative] = 500) -> DataBundle:
    """Windows of `window` samples of sin(2*pi*t/period + phase); targets: the next `horizon` samples."""
    gen = torch.Generator().manual_seed(seed)
    splits = []
    for n in (train_size, val_size, test_size):
        period = min_period + (max_period - min_period) * torch.rand(n, 1, generator=gen)
        phase = 2 * math.pi * torch.rand(n, 1, generator=gen)
        wave = torch.sin(2 * math.pi * torch.arange(window + horizon) / period + phase)
        splits.append(Split(wave[:, :window].unsqueeze(-1), wave[:, window:]))
    return DataBundle(*splits, task="regression", num_outputs=horizon)
