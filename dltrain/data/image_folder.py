"""Images in class folders (`data=image_folder`): torchvision's ImageFolder layout, `root/<class>/<image>`.

Class names are the sub-folder names, sorted (index = position); folders whose name starts with "." are
skipped, and so are files without an image extension. Every image is decoded once with Pillow, converted to
grayscale (`channels: 1`) or RGB (`channels: 3`) and resized to `size` = [H, W] (bilinear; the aspect ratio is
not kept). The decoded pixels (uint8) go to a cache file, `<cache_dir>/<root id>-<content id>.npz`, read back
with `allow_pickle=False`; the content id hashes the sorted file list with each file's size and modification
time, plus `size` and `channels`, so a changed folder (or other settings) decodes afresh and replaces its old
cache, and the next run of an unchanged folder starts without decoding (one cache per split folder). The
splits are seeded by `fractions`; pixels are scaled to [0, 1] and standardized per channel by the train split's
statistics, as for MNIST.
Works with model=cnn/resnet/mlp and the on-device augmentation (`+data.augment.flip=true`).

Fixed splits: a root whose only sub-folders are `train/` and any of `val/` (or `valid/`, `validation/`) and
`test/`, each in the class-folder layout, holds the splits (`split_folders`); `val_root` / `test_root` name a
split's folder instead (as data=csv's val_path / test_path). A split without a folder is drawn from the train
images by the fractions, as data=csv shares its pool (only test/: train and val by f_train : f_val). Classes
are the train folder's; a val or test folder with a class the train folder lacks is one line, one lacking a
class is fine (no sample of it). `stratify` draws each class's share on its own.
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

from dltrain.core.registry import ConfigError, check, first_line
from dltrain.core.rules import Length, Positive
from dltrain.data import DATASETS, DataBundle, Fractions, Split, check_files, scaling, train_stats
from dltrain.data.limits import Limit, check_inflated, open_image
from dltrain.data.targets import split_pool

VAL_NAMES = ("val", "valid", "validation")  # what a root's validation folder may be called
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")  # as torchvision
CACHE_VERSION = 1  # part of the content id: a change of the decoding invalidates old caches


def sub_folders(folder: Path) -> list[str]:
    """The names of the folder's sub-folders, sorted; those starting with "." are skipped."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folders(root: Path, val_root: str | None, test_root: str | None) -> dict[str, tuple[Path, str]]:
    """The folder of each split that has one, and how error lines name it. A root whose sub-folders are only
    `train/` and any of `val/` (or `valid/`, `validation/`) and `test/` holds the splits; any other root is one
    split, train (val and test are then drawn from it). data.val_root / data.test_root name a split's folder, in
    place of the root's."""
    check(root.is_dir(), f"data=image_folder: data.root={root} is not a folder; give a folder with one "
          "sub-folder of images per class (root/<class>/<image>.png), or train/, val/, test/ folders of them")
    found = set(sub_folders(root))
    vals = sorted(found & set(VAL_NAMES))
    check(len(vals) <= 1, f"data=image_folder: {root} has {' and '.join(f'{v}/' for v in vals)}; keep one "
          "validation folder")
    folders = {"train": (root, f"data.root={root}")}
    if found and found <= {"train", "test", *VAL_NAMES}:
        check("train" in found, f"data=image_folder: {root} holds {', '.join(f'{f}/' for f in sorted(found))} but "
              "no train/ folder; add root/train/<class>/<image> (val/ and test/ are optional)")
        folders = {s: (root / name, f"the {s} folder {root / name}") for s, name in
                   (("train", "train"), ("val", (vals or ["-"])[0]), ("test", "test")) if name in found}
    for split, given in (("val", val_root), ("test", test_root)):
        if given is not None:
            path = Path(given).expanduser().resolve()
            folders[split] = (path, f"data.{split}_root={path}")
    return folders


def scan(root: Path, named: str | None = None,
         classes: list[str] | None = None) -> tuple[list[str], list[Path], list[int]]:
    """Class names, image files and their labels, in sorted order. With `classes` (the train split's, for a val
    or test folder) the labels are indices into them; a class folder the train split lacks is one line, and a
    class missing here is allowed (the split has no sample of it). `named`: the folder in error lines."""
    named = named or f"data.root={root}"
    check(root.is_dir(), f"data=image_folder: {named} is not a folder; give a folder with one "
          "sub-folder of images per class (root/<class>/<image>.png)")
    names = sub_folders(root)
    if classes is None:
        classes = names
        check(len(classes) >= 2, f"data=image_folder: {root} has {len(classes)} class sub-folder(s) "
              f"({', '.join(classes) or 'none'}); it needs one sub-folder of images per class, at least two")
    extra = [n for n in names if n not in classes]
    problem = f"class folder(s) the train split lacks: {', '.join(extra)}" if extra else "no class folders"
    check(bool(names) and not extra, f"data=image_folder: {named} has {problem}; its classes must be among "
          f"the train split's ({', '.join(classes)})")
    files, labels = [], []
    for name in names:
        label = classes.index(name)
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
    """(N, C, H, W) uint8 pixels; a file Pillow cannot read, or one of more pixels than it decodes (limits.py: a
    decompression bomb), is one line naming it."""
    from PIL import Image  # only this data set needs Pillow

    out = np.empty((len(files), channels, *size), dtype=np.uint8)
    mode = "L" if channels == 1 else "RGB"
    for i, path in enumerate(files):
        try:
            with open_image(path) as image:
                pixels = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(pixels, dtype=np.uint8)
        except ConfigError:
            raise
        except (OSError, ValueError, SyntaxError) as err:
            raise ConfigError(f"{path} is not a readable image ({first_line(err)}); replace or remove it") from None
        out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return out


def read_cache(path: Path, count: int, channels: int, size: tuple[int, int]) -> np.ndarray | None:
    """The cached pixels, or None when there is no usable cache (then the images are decoded again); a file that
    would inflate beyond these pixels (and a header's 4 KiB) is not their cache, and is not inflated."""
    expected = count * channels * size[0] * size[1]
    try:
        check_inflated(path, "pixels", Limit((expected + 4096) / 2**20, "of the images' pixels"))
        with np.load(path, allow_pickle=False) as archive:
            pixels = archive["pixels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return pixels if pixels.shape == (count, channels, *size) and pixels.dtype == np.uint8 else None


def write_cache(folder: Path, prefix: str, name: str, pixels: np.ndarray) -> None:
    """Atomically (temp file, then rename); older caches of the same folder go. A folder that cannot be written
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
    given = {key: options.get(key) for key in ("val_root", "test_root") if options.get(key)}
    if given:
        check_files("a folder with one sub-folder of images per class", folder=True, **given)


def pixels_of(folder: Path, files: list[Path], hw: tuple[int, int], channels: int, cache: Path) -> torch.Tensor:
    """(N, C, H, W) values in [0, 1] of the files, decoded once and then read from the cache."""
    prefix = hashlib.sha256(str(folder).encode()).hexdigest()[:12]  # one cache per folder (split)
    name = f"{prefix}-{content_id(folder, files, hw, channels)}.npz"
    pixels = read_cache(cache / name, len(files), channels, hw)
    if pixels is None:
        pixels = decode(files, hw, channels)
        write_cache(cache, prefix, name, pixels)
    return torch.from_numpy(pixels).float().div_(255)


@DATASETS.register("image_folder", inputs=root_exists, task="classification")
def build_image_folder(*, seed: int, root: str | None = None, val_root: str | None = None,
                       test_root: str | None = None, size: Annotated[list[int], Positive, Length(2, 2)] = (32, 32),
                       channels: Literal[1, 3] = 3, cache_dir: str | None = None, fractions: Fractions = (0.8, 0.1, 0.1),
                       stratify: bool = False) -> DataBundle:
    """Images as (C, H, W) float tensors standardized with the train split's statistics; `size` is [height, width]
    in pixels."""
    root_exists(root=root)
    top = Path(root).expanduser().resolve()
    folders = split_folders(top, val_root, test_root)
    hw = (int(size[0]), int(size[1]))
    cache = Path(cache_dir).expanduser() if cache_dir is not None else top / ".dltrain_cache"
    classes, *found = scan(*folders["train"])
    scanned = {"train": found}  # every folder is checked before any image is decoded
    for split in [s for s in ("val", "test") if s in folders]:
        scanned[split] = scan(*folders[split], classes=classes)[1:]
    given = {s: (pixels_of(folders[s][0], files, hw, channels, cache), torch.tensor(labels, dtype=torch.long))
             for s, (files, labels) in scanned.items()}
    x, y = given.pop("train")
    drawn = split_pool(len(x), list(fractions), set(given), seed, y if stratify else None)
    mean, std = train_stats(x[drawn["train"]])
    parts = {**{s: (x[i], y[i]) for s, i in drawn.items()}, **given}
    train, val, test = (Split((parts[s][0] - mean) / std, parts[s][1]) for s in ("train", "val", "test"))
    prep = {"data": "image_folder", "input": "image", "image": {"size": list(hw), "channels": channels},
            "divide_by": 255.0, **scaling(mean, std)}  # raw input: pixel values 0..255 after decode()'s convert, resize
    return DataBundle(train, val, test, task="classification", num_outputs=len(classes), class_names=classes,
                      preprocessing=prep)
