"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): no download, ever."""
from __future__ import annotations

import torch

from dltrain.data import DATASETS, DataBundle, Fractions, scaled_splits

DIGIT_NAMES = [str(d) for d in range(10)]  # class index = the digit


@DATASETS.register("digits", task="classification")
def build_digits(*, seed: int, fractions: Fractions = (0.6, 0.2, 0.2), stratify: bool = False) -> DataBundle:
    """Images as (1, 8, 8) float tensors standardized with the train split's statistics."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(raw.target, dtype=torch.long)
    (train, val, test), scale = scaled_splits(x, y, list(fractions), seed, stratify)
    prep = {"data": "digits", "input": "array", **scale}  # raw input: sklearn's 8x8 grey levels, 0..16
    return DataBundle(train, val, test, task="classification", num_outputs=10, class_names=list(DIGIT_NAMES),
                      preprocessing=prep)
