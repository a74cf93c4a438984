"""MNIST, Fashion-MNIST and CIFAR-10 from their standard files in `data.root`.

Whatever standard files are present are pooled and split by `fractions` with the seed (e.g. only MNIST's
10,000-image t10k files), unless `use_official_test` keeps the official test set as the test split. Files
are downloaded (with MD5 checks) only when missing and `data.download=true`. MNIST's t10k files ship inside the
package (mnist_t10k/, CC BY-SA 3.0, see its README): `root: null` reads them, offline. CIFAR-10's pickled batches are
read by data/cifar.py, which never runs code from a file.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from dltrain.core.files import looked_in
from dltrain.core.registry import ConfigError, check, first_line
from dltrain.data import DATASETS, DataBundle, Fractions, Split, check_fractions, scaling, split_indices, train_stats
from dltrain.data.cifar import CLASSES, load_batch
from dltrain.data.digits import DIGIT_NAMES

IDX_PARTS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MIRRORS = {  # file -> (url, md5 of the .gz); the addresses torchvision uses
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
}
EMBEDDED_MNIST = Path(__file__).resolve().parent / "mnist_t10k"  # MNIST's official t10k pair, shipped as package data
CLASS_NAMES = {"mnist": DIGIT_NAMES, "cifar10": list(CLASSES),  # index -> name, as the data sets' own docs list them
               "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                 "Bag", "Ankle boot"]}


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, target: Path, expected_md5: str) -> None:
    """Fetch to a temp file, check the MD5, then rename: a broken download never looks like data."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:  # 60 s per read
            shutil.copyfileobj(response, out)
        got = md5(Path(tmp))
        if got != expected_md5:
            raise ConfigError(f"download of {url} has MD5 {got}, expected {expected_md5}; try again later")
        os.replace(tmp, target)
    except OSError as err:
        raise ConfigError(f"could not download {url} ({first_line(err)}); "
                          f"put the file in {target.parent} by hand") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def find_data_file(root: Path, name: str) -> Path | None:
    """`name` or `name.gz` in root or root/<anything>/raw (torchvision's layout)."""
    for folder in (root, *sorted(root.glob("*/raw"))):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (plain or gzipped): big-endian dims after a magic number whose last byte is the rank."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise ConfigError(f"{path} is not readable ({first_line(err)}); replace it with the original file") from None
    rank = raw[3] if len(raw) >= 4 and raw[:3] == b"\0\0\x08" else 0  # 0x08: unsigned bytes
    dims = np.frombuffer(raw, dtype=">u4", count=rank, offset=4) if len(raw) >= 4 + 4 * rank else []
    check(rank > 0 and len(raw) == 4 + 4 * rank + int(np.prod(dims)),
          f"{path} is not an IDX file of unsigned bytes or is truncated; replace it with the original file")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def read_idx_parts(name: str, root: Path, download_ok: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    found = {part: [find_data_file(root, f) for f in files] for part, files in IDX_PARTS.items()}
    if download_ok and not all(all(p) for p in found.values()):
        base, files = MIRRORS[name]
        for file, digest in files.items():
            if find_data_file(root, file.removesuffix(".gz")) is None:
                download(base + file, root / file, digest)
        found = {part: [find_data_file(root, f) for f in files] for part, files in IDX_PARTS.items()}
    for part, paths in found.items():  # half a pair is a mistake worth naming, not "no files"
        present = [f for f, p in zip(IDX_PARTS[part], paths) if p]
        missing = [f + "(.gz)" for f, p in zip(IDX_PARTS[part], paths) if not p]
        check(not present or not missing, f"data={name}: {root} has {present[0] if present else ''} but not "
              f"{', '.join(missing)}; images and labels come in pairs")
    parts = {part: (read_idx(p[0]), read_idx(p[1])) for part, p in found.items() if all(p)}
    for part, (images, labels) in parts.items():
        check(images.ndim == 3 and labels.ndim == 1 and len(images) == len(labels),
              f"data={name}: the {part} files in {root} disagree: images {images.shape}, labels {labels.shape}")
        check(len(images) > 0, f"data={name}: {found[part][0]} holds no images (its header counts 0); replace it "
              "with the original file, or remove the pair")
        bad = labels[labels > 9]  # all samples, at load time: not an IndexError mid-run
        check(len(bad) == 0, f"data={name}: {found[part][1]} has {len(bad)} label(s) outside 0..9 (e.g. "
              f"{int(bad.max()) if len(bad) else 0}); replace it with the original file")
    wanted = ", ".join(f + "(.gz)" for files in IDX_PARTS.values() for f in files)
    check(bool(parts), f"data={name}: no image files in {root}{looked_in(root)}; put {wanted} there (any one images+labels pair "
          "is enough), or set data.download=true to fetch them")
    return parts


def read_cifar10(root: Path, download_ok: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = next((p for p in (root / "cifar-10-batches-py", root) if (p / "test_batch").is_file()
                   or (p / "data_batch_1").is_file()), None)
    if folder is None and download_ok:
        base, files = MIRRORS["cifar10"]
        archive = root / "cifar-10-python.tar.gz"
        download(base + "cifar-10-python.tar.gz", archive, files["cifar-10-python.tar.gz"])
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        folder = root / "cifar-10-batches-py"
    check(folder is not None, f"data=cifar10: no CIFAR-10 batches in {root}{looked_in(root)}; put the python version's "
          "cifar-10-batches-py/ folder (data_batch_1..5, test_batch) there, or set data.download=true")
    parts = {}
    for part, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        batches = [load_batch(folder / n) for n in names if (folder / n).is_file()]  # never runs code
        if batches:
            parts[part] = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    return parts


def bundle(parts: dict[str, tuple[np.ndarray, np.ndarray]], fractions: list[float], seed: int,
           use_official_test: bool, class_names: list[str] | None = None, name: str = "mnist",
           stratify: bool = False) -> DataBundle:
    """Pool what is present, split (per class with `stratify`), scale to [0, 1] and standardize per channel by
    train statistics."""
    def tensors(arrays: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.concatenate([a[0] for a in arrays])).float().div_(255)
        x = x.unsqueeze(1) if x.dim() == 3 else x
        return x, torch.from_numpy(np.concatenate([a[1] for a in arrays]).astype(np.int64))

    official = use_official_test and "train" in parts and "test" in parts
    x, y = tensors([parts["train"]] if official else list(parts.values()))
    f = check_fractions(fractions)
    if official:  # train/val from the official train set by their shares; the official test set stays test
        f = (f[0] / (f[0] + f[1]), f[1] / (f[0] + f[1]), 0.0)
    train_idx, val_idx, test_idx = split_indices(len(x), f, seed, y if stratify else None)
    check(len(train_idx) > 0, f"data={name}: {len(x)} image(s) in all, too few for a train split of "
          f"data.fractions={list(fractions)}; give the data set's files with their images")
    test_x, test_y = tensors([parts["test"]]) if official else (x[test_idx], y[test_idx])
    mean, std = train_stats(x[train_idx])
    splits = [Split((xi - mean) / std, yi) for xi, yi in zip((x[train_idx], x[val_idx], test_x),
                                                             (y[train_idx], y[val_idx], test_y))]
    size, channels = list(x.shape[2:]), x.shape[1]
    prep = {"data": name, "input": "image", "image": {"size": size, "channels": channels}, "divide_by": 255.0,
            **scaling(mean, std)}  # raw input: pixel values 0..255 (MNIST: white digit on black)
    return DataBundle(*splits, task="classification", num_outputs=10, class_names=class_names, preprocessing=prep)


def image_folder(name: str, root: str | None, download_ok: bool) -> Path:
    """Where data=`name` reads its files: `root`; when null, MNIST's shipped t10k files (or, to download into,
    the cache folder ~/.cache/dltrain/<name>, every data set's default before the files shipped)."""
    if root is not None:
        return Path(root).expanduser()
    if name == "mnist" and not download_ok:
        return EMBEDDED_MNIST
    return Path(f"~/.cache/dltrain/{name}").expanduser()


def official_split_advice(name: str, folder: Path) -> str:
    """What use_official_test needs that `folder` lacks: the files to download, from where, and where to put them."""
    base, files = MIRRORS[name]
    if name == "cifar10":
        return (f"data.use_official_test=true needs CIFAR-10's data_batch_1..5 and test_batch in {folder}: unpack "
                f"{base}cifar-10-python.tar.gz there, or set data.use_official_test=false to split what is there")
    missing = " and ".join(f for f in files if find_data_file(folder, f.removesuffix(".gz")) is None)
    if folder == EMBEDDED_MNIST:
        return (f"data.use_official_test=true needs MNIST's 60,000 training images, which dltrain does not ship: "
                f"download {missing} from {base} into a folder holding a copy of the t10k pair in {folder} and set "
                f"data.root=FOLDER, or set data.download=true to fetch all four into ~/.cache/dltrain/mnist")
    return (f"data.use_official_test=true needs both the official train and test files in {folder}: download "
            f"{missing} from {base} into it (or set data.download=true), or set data.use_official_test=false to "
            f"split what is there")


def _register(name: str) -> None:
    @DATASETS.register(name, task="classification")
    def build(*, seed: int, root: str | None = None, fractions: Fractions = (0.8, 0.1, 0.1),
              use_official_test: bool = False, download: bool = False, stratify: bool = False) -> DataBundle:
        folder = image_folder(name, root, download)
        parts = read_cifar10(folder, download) if name == "cifar10" else read_idx_parts(name, folder, download)
        check(not use_official_test or {"train", "test"} <= set(parts), official_split_advice(name, folder))
        return bundle(parts, list(fractions), seed, use_official_test, list(CLASS_NAMES[name]), name, stratify)


for _name in ("mnist", "fashion_mnist", "cifar10"):
    _register(_name)
