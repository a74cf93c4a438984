"""Your data: a builder that reads a file and returns dltrain's DataBundle (train/val/test tensors in memory).

The YAML (conf/data/points.yaml) gives `path` (relative to this folder), `batch_size` and `fractions`; dltrain
passes `seed` (trainer.seed) so the split is reproducible. Features are standardized with train statistics.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dltrain import DataBundle, check, register_data
from dltrain.data import scaled_splits


@register_data("points", task="classification")  # the door and a sweep's columns know it without the data
def build_points(*, seed: int, path: str = "data/points.csv", fractions: list[float] = (0.7, 0.15, 0.15)) -> DataBundle:
    file = Path(__file__).parent / path
    check(file.is_file(), f"data.path={path}: no such file in {Path(__file__).parent}")
    table = np.loadtxt(file, delimiter=",", skiprows=1, dtype=np.float32)  # columns: x1, x2, label
    check(table.ndim == 2 and table.shape[1] >= 2, f"{file} needs feature columns and a label column")
    x, y = torch.from_numpy(table[:, :-1]), torch.from_numpy(table[:, -1]).long()
    (train, val, test), scale = scaled_splits(x, y, list(fractions), seed)  # one mean/std per feature, from train
    # how a raw input becomes x, saved in checkpoints: `dltrain predict RUN points.npy` and the export use it
    preprocessing = {"data": "points", "input": "array", **scale}
    return DataBundle(train, val, test, task="classification", num_outputs=int(y.max()) + 1,
                      class_names=["inner", "outer"], preprocessing=preprocessing)
