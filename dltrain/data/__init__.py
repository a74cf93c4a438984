"""Datasets. Each file in this folder registers its builders with `@DATASETS.register(name)`.

A builder is `build(*, seed: int, **typed_config_kwargs) -> DataBundle`: whole splits as tensors, which
the engine moves to the training device once and batches by indexing (no DataLoader on the hot path).
Adding a dataset is a new file here plus a YAML in conf/data/: every module here is imported automatically.
This module also holds the helpers several sets share: split sizes and fractions, seeded splits (plain, or
stratified by class with data.stratify=true) and the per-channel standardisation by train statistics.
May import: dltrain.core and dltrain.data (not models, run, sweep, tools or cli).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch

from dltrain.core.engine import Split  # the engine's type, re-exported: dltrain.data.Split is the same class
from dltrain.core.files import looked_in
from dltrain.core.registry import Problems, Registry, check
from dltrain.core.rules import Check

# The seed comes from trainer.seed, never from data.*. A registration may declare the data's own `task` (a name, or
# a function of the options giving a name or None when only the data tells), so the door knows its metrics.
DATASETS = Registry("data", runtime=("seed",))


@dataclass
class DataBundle:
    """What a dataset builder returns: the three splits and what the model/task need to know."""

    train: Split
    val: Split
    test: Split
    task: str = "classification"  # which task (tasks.py) trains on it
    num_outputs: int = 10  # classes for classification, target size for regression, vocabulary size for tokens
    vocab: list[str] | None = None  # token inputs only: index -> character table (decodes ids, sizes embeddings)
    per_step_targets: bool = False  # one target per time step (language modelling), not one per sequence
    class_names: list[str] | None = None  # classification: a readable name per class index, when known
    chance_mse: float | None = None  # regression: the MSE of the best constant prediction (the chance level)
    # what turns a raw input into x, learned from the train split, as plain JSON-able values (dltrain/preprocess.py
    # documents the keys); None = unknown (a user's builder that does not say): `dltrain predict` then refuses
    preprocessing: dict[str, Any] | None = None
    # what trains but is likely a mistake, one line each (an id column as a feature): a run prints them once
    warnings: list[str] = field(default_factory=list)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def model_args(self) -> dict[str, Any]:
        """What a model builder receives from the data besides in_shape/num_outputs: {"vocab_size": len(vocab),
        "per_step": per_step_targets} for token data, else {}."""
        if self.vocab is None:
            return {}
        return {"vocab_size": len(self.vocab), "per_step": self.per_step_targets}

    def description(self) -> dict[str, Any] | None:
        """What a checkpoint keeps so that raw inputs can be predicted without the training data: the builder's
        `preprocessing` plus one sample's shape and dtype, the task and its classes, the model's data arguments."""
        if self.preprocessing is None:
            return None
        return {"format": 1, "shape": list(self.in_shape), "dtype": str(self.train.x.dtype).removeprefix("torch."),
                "task": self.task, "num_outputs": self.num_outputs, "class_names": self.class_names,
                "model_args": self.model_args(), **self.preprocessing}


def valid_fractions(fractions: list[float]) -> bool:
    return (len(fractions) == 3 and all(f >= 0 for f in fractions) and 0 < sum(fractions) <= 1.0 + 1e-9
            and fractions[0] > 0)


FRACTIONS_RULE = "must be three train/val/test fractions with train > 0 and a sum <= 1, e.g. [0.6, 0.2, 0.2]"
Fractions = Annotated[list[float], Check(valid_fractions, FRACTIONS_RULE)]  # data.fractions, checked at the door


def check_fractions(fractions: list[float]) -> tuple[float, float, float]:
    """data.fractions: train/val/test shares of the samples, train > 0, summing to at most 1."""
    check(valid_fractions(fractions), f"data.fractions={list(fractions)} {FRACTIONS_RULE}")
    return fractions[0], fractions[1], fractions[2]


def check_files(what: str, folder: bool = False, **paths: str | list[str] | None) -> None:
    """At the door: each data file (or folder) given exists; a relative path says where it was looked for.
    `what` tells the user what belongs there, e.g. 'a CSV file'."""
    problems = Problems()
    for key, given in paths.items():
        for path in [given] if isinstance(given, str) else list(given or []):
            found = Path(path).expanduser()
            with problems.collect():
                check(found.is_dir() if folder else found.is_file(),
                      f"data.{key}={path} is not a {'folder' if folder else 'file'}{looked_in(found)}; give {what}")
    problems.raise_if_any()


def task_of(**options: Any) -> str | None:
    """A `task` trait for builders whose `task` option may be `auto`: the option, or None (the data decides)."""
    return None if options.get("task", "auto") == "auto" else options["task"]


def split_indices(n: int, fractions: tuple[float, float, float], seed: int,
                  labels: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """A seeded random train/val/test partition of range(n) by fractions (which must sum to <= 1).

    With `labels` (one class id per sample; data.stratify=true) the split is stratified: each class's samples,
    in the same seeded order, are cut by the fractions on their own, so every split holds each class's share to
    within one sample (the split sizes may then differ from the plain split's by up to one per class)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if labels is None:
        return cut(perm, fractions)
    labels = torch.as_tensor(labels).reshape(n)
    parts: list[list[torch.Tensor]] = [[], [], []]
    for label in labels.unique():  # sorted: the same seed gives the same split
        for part, piece in zip(parts, cut(perm[labels[perm] == label], fractions)):
            part.append(piece)
    rank = torch.empty(n, dtype=torch.long)
    rank[perm] = torch.arange(n)  # each sample's place in the seeded order: the splits keep it (classes mixed)
    joined = [torch.cat(part) for part in parts]
    return tuple(idx[rank[idx].argsort()] for idx in joined)


def cut(order: torch.Tensor, fractions: tuple[float, float, float]) -> tuple[torch.Tensor, ...]:
    """The first, next and following shares of `order`: rounded fraction counts; with fractions summing to 1
    the test share takes the rest, so no sample is lost."""
    n = len(order)
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    rest = n - n_train - n_val
    n_test = rest if abs(sum(fractions) - 1.0) < 1e-9 else min(int(round(fractions[2] * n)), rest)  # no lost sample
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:n_train + n_val + n_test]


def train_stats(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per channel (axis 1; a feature for (N, F) data) over the samples and every other axis,
    shaped (C, 1, ...) to broadcast against one sample."""
    dims = [0] + list(range(2, train_x.dim()))  # all but the channel axis
    mean = train_x.mean(dim=dims, keepdim=True)[0]
    std = train_x.std(dim=dims, keepdim=True)[0].clamp_min(1e-8)  # a constant channel stays finite (all zero)
    return mean, std


def scaling(mean: torch.Tensor, std: torch.Tensor) -> dict[str, list[float]]:
    """The `preprocessing` entries of a per-channel standardisation: x = (raw - mean[c]) / std[c]."""
    return {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}


def standardize(train_x: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(train_x, *others) scaled by train_x's mean and std per channel (`train_stats`), so no val/test value
    leaks into the statistics."""
    mean, std = train_stats(train_x)
    return tuple((x - mean) / std for x in (train_x, *others))


def scaled_splits(x: torch.Tensor, y: torch.Tensor, fractions: list[float], seed: int,
                  stratify: bool = False) -> tuple[tuple[Split, ...], dict[str, list[float]]]:
    """Split by seeded fractions (per class of `y` when `stratify`: `split_indices`), then scale by the train
    split's mean and std (one value per channel); also returns that scaling (`scaling`) for the bundle's
    `preprocessing`."""
    indices = split_indices(len(x), check_fractions(fractions), seed, y if stratify else None)
    mean, std = train_stats(x[indices[0]])
    return tuple(Split((x[i] - mean) / std, y[i]) for i in indices), scaling(mean, std)


def standardized_splits(x: torch.Tensor, y: torch.Tensor, fractions: list[float], seed: int,
                        stratify: bool = False) -> tuple[Split, ...]:
    """Split by seeded fractions, then scale by the train split's mean and std (one value per channel)."""
    return scaled_splits(x, y, fractions, seed, stratify)[0]


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
