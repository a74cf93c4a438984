"""Targets and splits of a user's files, shared by data=csv, data=arrays and data=image_folder: the pooled rows
split by `fractions` beside the splits given as their own files (`split_pool`; per class with data.stratify=true,
`strata`), and class indices or scaled regression targets from the raw target values (`encode_targets`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from dltrain.core.registry import check
from dltrain.data import check_fractions, scaling, split_indices, train_stats

SPLITS = ("train", "val", "test")
Task = Literal["auto", "classification", "regression"]


def split_pool(n: int, fractions: list[float], given: set[str], seed: int,
               labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Indices of a pooled set's train split and of each split not `given` by its own file. Without given
    splits the pool is split by `fractions` as they are (a sum below 1 leaves samples out); with some, the pool
    is shared among train and the missing ones in proportion to their fractions (test from its own file:
    train/val by f_train : f_val). With `labels` each class is split on its own (`split_indices`)."""
    f = check_fractions(list(fractions))
    if given:
        shares = [f[0], 0.0 if "val" in given else f[1], 0.0 if "test" in given else f[2]]
        total = sum(shares)
        f = (shares[0] / total, shares[1] / total, shares[2] / total)
    drawn = zip(SPLITS, split_indices(n, f, seed, labels))
    return {name: idx for name, idx in drawn if name == "train" or name not in given}


def resolved_task(pooled: np.ndarray, task: Task, max_classes: int) -> str:
    """task=auto: text, or integer values with at most `max_classes` distinct values, is classification."""
    if task != "auto":
        return task
    numeric = pooled.dtype.kind in "biuf"
    integral = numeric and bool(np.all(np.mod(pooled, 1) == 0))
    return "classification" if not numeric or (integral and len(np.unique(pooled)) <= max_classes) else "regression"


def strata(values: dict[str, np.ndarray], task: Task, max_classes: int, where: str) -> torch.Tensor:
    """data.stratify=true: a class id per sample of the pool (`values["train"]`, raw target values) for a split
    drawn per class. The task is resolved from every split's values, as `encode_targets` does; a regression
    target has no classes to stratify by: one line."""
    pooled = np.concatenate([as_2d(v) for v in values.values()])
    check(resolved_task(pooled, task, max_classes) == "classification", f"data.stratify=true splits each class on "
          f"its own, but data.task={task} takes {where} as regression targets: set data.stratify=false (or "
          "data.task=classification)")
    check(pooled.shape[1] == 1, f"{where}: classification takes one label per sample, got {pooled.shape[1]} values "
          "per sample (give class indices, or set data.task=regression)")
    return torch.from_numpy(np.unique(as_2d(values["train"])[:, 0], return_inverse=True)[1].astype(np.int64))


@dataclass
class Targets:
    """Encoded targets of the three splits and what the bundle needs to know about them."""

    y: dict[str, torch.Tensor]  # split -> (N,) long class indices, or (N, K) float regression targets
    task: str
    num_outputs: int
    class_names: list[str] | None = None
    chance_mse: float | None = None
    scaling: dict[str, list[float]] | None = None  # regression: the train mean/std the targets were scaled by


def encode_targets(values: dict[str, np.ndarray], task: Task, max_classes: int, standardize_target: bool,
                   where: str) -> Targets:
    """Class indices or regression targets from raw target values per split (numbers, or strings for text).

    task=auto: text, or integer values with at most `max_classes` distinct values, is classification; other
    numbers are regression. Classes are the sorted distinct values of all splits (numerically for numbers).
    Regression targets are scaled by the train split's mean and std when `standardize_target`, and
    chance_mse is then the train split's variance in those units (the MSE of predicting its mean)."""
    pooled = np.concatenate([as_2d(v) for v in values.values()])
    numeric = pooled.dtype.kind in "biuf"
    integral = numeric and bool(np.all(np.mod(pooled, 1) == 0))
    distinct = np.unique(pooled)
    task = resolved_task(pooled, task, max_classes)
    if task == "regression":
        check(numeric, f"{where} has text values (e.g. {str(distinct[0])!r}): data.task=regression needs numbers")
        ys = {k: torch.from_numpy(as_2d(v).astype(np.float32)) for k, v in values.items()}
        scale = None
        if standardize_target:
            mean, std = train_stats(ys["train"])
            ys, scale = {k: (v - mean) / std for k, v in ys.items()}, scaling(mean, std)
        train = ys["train"]
        chance = float(((train - train.mean(0)) ** 2).mean()) if len(train) else None
        return Targets(ys, "regression", train.shape[1], chance_mse=chance, scaling=scale)
    check(pooled.shape[1] == 1, f"{where}: classification takes one label per sample, got {pooled.shape[1]} values "
          "per sample (give class indices, or set data.task=regression)")
    check(len(distinct) >= 2, f"{where} has a single value ({str(distinct[0])!r}): nothing to classify")
    check(len(distinct) <= 10_000, f"{where} has {len(distinct)} distinct values: too many classes "
          "(set data.task=regression for a numeric target)")
    names = [str(int(v)) if integral else str(v) for v in distinct.tolist()]
    ys = {k: torch.from_numpy(np.searchsorted(distinct, v.reshape(-1)).astype(np.int64)) for k, v in values.items()}
    return Targets(ys, "classification", len(distinct), class_names=names)


def as_2d(v: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, K), also for N = 0."""
    return v.reshape(len(v), math.prod(v.shape[1:]))
