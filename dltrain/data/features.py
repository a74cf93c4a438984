"""The feature matrix of a CSV table (`data=csv`): standardized numeric columns, then one-hot text columns.

`encode_features` learns everything from the train split (each numeric column's fill value, mean and std; each
text column's categories) and returns it as the plain `columns`/`mean`/`std` description that a checkpoint keeps,
so that `dltrain predict` and an exported model encode a new row exactly as the training rows were encoded
(dltrain/preprocess.py reads it back).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dltrain.core.registry import check
from dltrain.data import train_stats
from dltrain.data.targets import SPLITS


@dataclass
class Features:
    """(N, F) float32 inputs per split and how a raw row becomes one (`columns` in the order of x's blocks)."""

    x: dict[str, torch.Tensor]
    columns: list[dict[str, Any]]  # {name, kind: numeric, fill} or {name, kind: categorical, categories}
    mean: list[float]  # per position of x: the numeric columns' train mean, 0 for one-hot positions
    std: list[float]  # likewise: the train std (>= 1e-8), 1 for one-hot positions
    unseen: dict[str, list[str]]  # text column -> its val/test values the train split lacks (encoded as all zeros)


def encode_features(features: list[str], numeric: dict[str, bool], rows: dict[str, list[list[str | None]]],
                    nums: dict[str, list[list[float | None]]], max_categories: int) -> Features:
    """(N, F) float32 per split: the numeric columns (missing -> train mean) standardized by the train split,
    then one one-hot block per text column over its train categories (unseen or missing -> all zeros)."""
    blocks: dict[str, list[torch.Tensor]] = {s: [] for s in SPLITS}
    numeric_features = [j for j, h in enumerate(features) if numeric[h]]
    columns: list[dict[str, Any]] = []
    unseen: dict[str, list[str]] = {}
    mean: list[float] = []
    std: list[float] = []
    if numeric_features:
        raw = {s: torch.tensor([[r[j] if r[j] is not None else math.nan for j in numeric_features] for r in nums[s]],
                               dtype=torch.float64).reshape(len(nums[s]), len(numeric_features)) for s in SPLITS}
        fill = torch.nanmean(raw["train"], dim=0)  # what a missing cell becomes (data.missing=mean)
        empty = [features[k] for k, v in zip(numeric_features, fill.tolist()) if math.isnan(v)]
        check(not empty, f"data=csv: column(s) {', '.join(map(repr, empty))} have no value in the train split; "
              "list them in data.drop")
        raw = {s: torch.where(torch.isnan(x), fill, x).float() for s, x in raw.items()}
        m, sd = train_stats(raw["train"])
        for s in SPLITS:
            blocks[s].append((raw[s] - m) / sd)
        fills = fill.float().tolist()  # float32 values, as the cells were filled before scaling
        columns += [{"name": features[j], "kind": "numeric", "fill": f} for j, f in zip(numeric_features, fills)]
        mean, std = m.tolist(), sd.tolist()
    for j, h in enumerate(features):
        if numeric[h]:
            continue
        categories = sorted({r[j] for r in rows["train"] if r[j] is not None})
        check(len(categories) <= max_categories, f"data=csv: column {h!r} has {len(categories)} distinct text values "
              f"in the train split (more than data.max_categories={max_categories}): list it in data.drop if it "
              "is an id or free text, or raise data.max_categories")
        index = {c: k for k, c in enumerate(categories)}
        others = {r[j] for s in SPLITS if s != "train" for r in rows[s] if r[j] is not None and r[j] not in index}
        if others:
            unseen[h] = sorted(others)
        for s in SPLITS:
            onehot = torch.zeros(len(rows[s]), len(categories))
            hits = [(i, index[r[j]]) for i, r in enumerate(rows[s]) if r[j] in index]  # unseen/missing: all zero
            if hits:
                onehot[torch.tensor([i for i, _ in hits]), torch.tensor([k for _, k in hits])] = 1.0
            blocks[s].append(onehot)
        columns.append({"name": h, "kind": "categorical", "categories": categories})
        mean += [0.0] * len(categories)  # one-hot positions pass through the model's standardisation unchanged
        std += [1.0] * len(categories)
    return Features({s: torch.cat(b, dim=1) for s, b in blocks.items()}, columns, mean, std, unseen)
