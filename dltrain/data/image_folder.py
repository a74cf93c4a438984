"""Images in class folders (`data=image_folder`): torchvision's ImageFolder layout, `root/<class>/<image>`.

Class names are the sub-folder names, sorted (index = position); folders whose name starts with "." are
skipped, and so are files without an image extension. Every image is decoded once with Pillow, converted to
grayscale (`channels: 1`) or RGB (`channels: 3`) and resized to `size` = [H, W] (bilinear; the aspect ratio is
not kept). The decoded pixels (uint8) go to a cache file, `<cache_dir>/<root id>-<content id>.npz`, read back
with `allow_pickle=False`; the content id hashes the sorted file list with each file's size and modification
time, plus `size` and `channels`, so a changed folder (or other settings) decodes afresh and replaces its old
cache, and the next run of an unchanged folder starts without decoding. The splits are seeded by `fractions`;
pixels are scaled to [0, 1] and standardized per channel by the train split's statistics, as for MNIST.
Works with model=cnn/resnet/mlp and the on-device augmentation (`+data.augment.flip=true`).
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch

from dltrain.data import DATASETS, DataBundle, Fractions, check_files, scaled_splits
from dltrain.registry import ConfigError, check, first_line
from dltrain.rules import Length, Positive

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")  # as torchvision
CACHE_VERSION = 1  # part of the content id: a change of the decoding invalidates old caches


def scan(root: Path) -> tuple[list[str], list[Path], list[int]]:
    """Class names, image files and their labels, in sorted order."""
    check(root.is_dir(), f"data=image_folder: data.root={root} is not a folder; give a folder with one "
          "sub-folder of images per class (root/<class>/<image>.png)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    check(len(classes) >= 2, f"data=image_folder: {root} has {len(classes)} class sub-folder(s) "
          f"({', '.join(classes) or 'none'}); it needs one sub-folder of images per class, at least two")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        check(bool(found), f"data=image_folder: {root / name} has no images ({', '.join(EXTENSIONS)}); "
              "add some or remove the folder")
        files += found
        labels += [label] * len(found)
    return classes, files, labels


def content_id(root: Path, files: list[Path], size: tuple[int, int], channels: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION} {size} {channels}\n".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode(files: list[Path], size: tuple[int, int], channels: int) -> np.ndarray:
    """(N, C, H, W) uint8 pixels; a file Pillow cannot read is one line naming it."""
    from PIL import Image  # only this data set needs Pillow

    out = np.empty((len(files), channels, *size), dtype=np.uint8)
    mode = "L" if channels == 1 else "RGB"
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                pixels = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(pixels, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise ConfigError(f"{path} is not a readable image ({first_line(err)}); replace or remove it") from None
        out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return out


def read_cache(path: Path, count: int, channels: int, size: tuple[int, int]) -> np.ndarray | None:
    """The cached pixels, or None when there is no usable cache (then the images are decoded again)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            pixels = archive["pixels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return pixels if pixels.shape == (count, channels, *size) and pixels.dtype == np.uint8 else None


def write_cache(folder: Path, prefix: str, name: str, pixels: np.ndarray) -> None:
    """Atomically (temp file, then rename); older caches of the same root go. A folder that cannot be written
    costs only the speed-up: one warning line, and the run goes on."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, pixels=pixels)
            os.replace(tmp, folder / name)
        finally:
            Path(tmp).unlink(missing_ok=True)
        for old in folder.glob(f"{prefix}-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)
    except OSError as err:
        print(f"dltrain: warning: cannot write the image cache in {folder} ({err.strerror or err}); the next "
              "run decodes the images again (set data.cache_dir to a writable folder)", file=sys.stderr)


def root_exists(**options: Any) -> None:
    check(options["root"] is not None, "data=image_folder needs data.root=FOLDER with one sub-folder of images "
          "per class")
    check_files("a folder with one sub-folder of images per class (root/<class>/<image>.png)", folder=True,
                root=options["root"])


@DATASETS.register("image_folder", inputs=root_exists, task="classification")
def build_image_folder(*, seed: int, root: str | None = None,
                       size: Annotated[list[int], Positive, Length(2, 2)] = (32, 32), channels: Literal[1, 3] = 3, cache_dir: str | None = None,
                       fractions: Fractions = (0.8, 0.1, 0.1)) -> DataBundle:
    """Images as (C, H, W) float tensors standardized with the train split's statistics; `size` is [height, width]
    in pixels."""
    root_exists(root=root)
    folder = Path(root).expanduser().resolve()
    classes, files, labels = scan(folder)
    hw = (int(size[0]), int(size[1]))
    cache = Path(cache_dir).expanduser() if cache_dir is not None else folder / ".dltrain_cache"
    prefix = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    name = f"{prefix}-{content_id(folder, files, hw, channels)}.npz"
    pixels = read_cache(cache / name, len(files), channels, hw)
    if pixels is None:
        pixels = decode(files, hw, channels)
        write_cache(cache, prefix, name, pixels)
    x = torch.from_numpy(pixels).float().div_(255)
    y = torch.tensor(labels, dtype=torch.long)
    (train, val, test), scale = scaled_splits(x, y, list(fractions), seed)
    prep = {"data": "image_folder", "input": "image", "image": {"size": list(hw), "channels": channels},
            "divide_by": 255.0, **scale}  # raw input: pixel values 0..255 after decode()'s convert and resize
    return DataBundle(train, val, test, task="classification", num_outputs=len(classes), class_names=classes,
                      preprocessing=prep)
