"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): no download, ever."""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from dltrain.data import DATASETS, DataBundle, Fractions, scaled_splits

DIGIT_NAMES = [str(d) for d in range(10)]  # class index = the digit


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The images (1797, 8, 8), float64 grey levels 0..16, and their digits (1797,), as sklearn's load_digits gives
    them, read from the CSV file scikit-learn ships (what load_digits reads) without importing scikit-learn: its
    import costs ~0.65 s per process (more than an epoch on digits; every DDP worker pays it too).
    Falls back to load_digits where the file is not in its usual place."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        raw = load_digits()
        return raw.images, raw.target
    with gzip.open(path, mode="rt", encoding="utf-8") as rows:
        data = np.loadtxt(rows, delimiter=",")  # as sklearn's load_gzip_compressed_csv_data parses it
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


@DATASETS.register("digits", task="classification")
def build_digits(*, seed: int, fractions: Fractions = (0.6, 0.2, 0.2), stratify: bool = False) -> DataBundle:
    """Images as (1, 8, 8) float tensors standardized with the train split's statistics."""
    images, target = digit_images()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(target, dtype=torch.long)
    (train, val, test), scale = scaled_splits(x, y, list(fractions), seed, stratify)
    prep = {"data": "digits", "input": "array", **scale}  # raw input: sklearn's 8x8 grey levels, 0..16
    return DataBundle(train, val, test, task="classification", num_outputs=10, class_names=list(DIGIT_NAMES),
                      preprocessing=prep)
