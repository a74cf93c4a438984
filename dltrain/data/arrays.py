"""NumPy arrays from `.npy` / `.npz` files (`data=arrays`), memory-mapped when large.

`path` is an `.npz` holding inputs and targets (arrays `x_key`, `y_key`; or per-split arrays
`<x_key>_train`, `<y_key>_train`, `<x_key>_test`, ... as in Keras' mnist.npz), or an `.npy` of inputs with
the targets in `y_path`. `val_path` / `test_path` (with `val_y_path` / `test_y_path` for `.npy`) name files
that are those splits as they are; whatever split is not given is carved out of `path` by `fractions` (each
class on its own with `stratify`).
Files are always read with `allow_pickle=False`: a file that holds Python objects is refused, never run.

An `.npy` file larger than `mmap_threshold_mb` is memory-mapped (`np.load(mmap_mode="r")`) and never read
into memory whole: its splits are `MappedRows`, which gather each batch from the file when the engine indexes
them, so a data set larger than RAM trains (the operating system keeps the recently used pages cached).
NumPy cannot memory-map the members of an `.npz` (a zip archive): those are always read into memory; save
large inputs as `.npy`. Targets are always read into memory.

Inputs become float32 and, with `standardize`, are scaled per channel (axis 1) by the train split's mean and
std, computed in chunks for a mapped file and applied to each gathered batch. Non-finite inputs or targets
are found at load time (one chunked pass over a mapped file). The task follows the targets as for data=csv:
integers with at most `max_classes` distinct values are classification, other numbers regression.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from dltrain.core.registry import ConfigError, check, first_line
from dltrain.core.rules import NonNegative, Range
from dltrain.data import DATASETS, DataBundle, Fractions, Split, check_files, scaling, task_of, train_stats
from dltrain.data.limits import Limit, check_inflated, memory_limit
from dltrain.data.targets import SPLITS, Task, encode_targets, split_pool, strata

CHUNK_BYTES = 8 << 20  # bytes of rows read at a time by the load-time passes over a mapped file


class MappedRows:
    """The rows `rows` of an array memory-mapped from a `.npy` file, read on demand: what a Split's `x` needs
    to support for the engine, without holding the data in memory.

    `x[idx]` (an index tensor on any device, or a slice) gathers those rows from the file, converts them to
    float32 and scales them by `mean`/`std` (per channel, if given) in numpy for the CPU, or moves them to
    `device` first and does that there, and returns a tensor. `len`, `shape`, `dim()`, `device`, `to(device)`
    (the same rows for another device, no data moved) and `contiguous(memory_format)` (the layout of the
    batches it returns) behave like a tensor's: all that assemble.to_device and the engine use of a Split's x."""

    def __init__(self, array: np.ndarray, rows: np.ndarray, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None, device: torch.device | str = "cpu",
                 memory_format: torch.memory_format | None = None) -> None:
        self.array, self.rows = array, np.asarray(rows, dtype=np.int64)
        self.device = torch.device(device)
        self.mean = None if mean is None else mean.to(self.device)
        self.std = None if std is None else std.to(self.device)
        self.memory_format = memory_format

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.array.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def __len__(self) -> int:
        return len(self.rows)

    def dim(self) -> int:
        return self.array.ndim

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MappedRows:  # noqa: ARG002
        return MappedRows(self.array, self.rows, self.mean, self.std, device, self.memory_format)

    def contiguous(self, memory_format: torch.memory_format = torch.contiguous_format) -> MappedRows:
        return MappedRows(self.array, self.rows, self.mean, self.std, self.device, memory_format)

    def numpy_rows(self, key: Any) -> np.ndarray:
        """The file rows of `key`'s samples, copied into memory (np.take reads them straight from the map)."""
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        rows = np.take(self.array, self.rows[key], axis=0)
        return rows if rows.dtype.isnative else rows.astype(rows.dtype.newbyteorder("="))  # torch takes native only

    def __getitem__(self, key: Any) -> torch.Tensor:
        rows = self.numpy_rows(key)  # a fresh copy: scaled in place
        one = rows.ndim < self.array.ndim  # a single sample, without the batch axis
        if self.device.type == "cpu":  # numpy's single-threaded ops: no intra-op thread pool for a small batch
            rows = rows.astype(np.float32, copy=False)
            if self.mean is not None:
                mean, std = self.mean.numpy(), self.std.numpy()
                rows -= mean[0] if one else mean
                rows /= std[0] if one else std
            batch = torch.from_numpy(rows)
        else:  # move the file's dtype (often smaller), then convert and scale on the device
            batch = torch.from_numpy(rows).to(self.device, non_blocking=True).float()
            if self.mean is not None:
                batch = (batch - self.mean[0]) / self.std[0] if one else (batch - self.mean) / self.std
        if self.memory_format is not None and batch.dim() == 4:
            batch = batch.contiguous(memory_format=self.memory_format)
        return batch

    def __repr__(self) -> str:
        return f"MappedRows({len(self)} rows of {self.array.shape} {self.array.dtype}, device={self.device})"


def read_array(path: Path, member: str | None, mmap_above_mb: float | None, what: str,
               limit: Limit | None = None) -> np.ndarray:
    """An .npy file (memory-mapped when larger than `mmap_above_mb` MB, if given) or the array `member` of an
    .npz (always read into memory: numpy cannot map inside a zip). Never unpickles: allow_pickle=False. An array
    read into memory is first checked against `limit` (default: an .npz member against the memory available)."""
    check(path.is_file(), f"data=arrays: the {what} file {path} is not a file")
    suffix = path.suffix.lower()
    check(suffix in (".npy", ".npz"), f"data=arrays: {path} is not an .npy or .npz file")
    try:
        check_inflated(path, member, limit if limit is not None or suffix == ".npy" else memory_limit())
        if suffix == ".npy":
            check_npy_size(path)
            mapped = mmap_above_mb is not None and path.stat().st_size > mmap_above_mb * 2**20
            return np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            check(member in archive.files, f"{path} has no array {member!r}; it holds "
                  f"{', '.join(archive.files) or 'none'} (set data.x_key / data.y_key)")
            return archive[member]
    except ConfigError:
        raise
    except MemoryError:
        raise ConfigError(f"{path} ({path.stat().st_size / 2**20:.0f} MiB) does not fit in memory; set "
                          "data.mmap_threshold_mb below its size to memory-map it (.npy only)") from None
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise ConfigError(f"{path} holds Python objects (pickled data); dltrain never unpickles a data file: "
                              "save plain numeric arrays (np.save / np.savez)") from None
        raise ConfigError(f"{path} is not a valid {suffix} file or is truncated ({first_line(err)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ConfigError(f"{path} is not a valid {suffix} file or is truncated ({first_line(err)})") from None


def check_npy_size(path: Path) -> None:
    """Refuse an .npy whose header declares more data than it holds, before numpy allocates or maps that much."""
    with open(path, "rb") as handle:
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        read = readers.get(np.lib.format.read_magic(handle))
        if read is None:  # a later format: numpy's own reader checks it
            return
        shape, _, dtype = read(handle)
        held = path.stat().st_size - handle.tell()
    declared = math.prod(shape) * dtype.itemsize
    check(dtype.hasobject or held >= declared, f"{path} is not a valid .npy file or is truncated: its header "
          f"declares an array {tuple(shape)} of {dtype} ({declared} bytes) but it holds {held} bytes of data; "
          "write it again with np.save")


def npz_files(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{path} is not a valid .npz file or is truncated ({first_line(err)})") from None


def nonfinite(array: np.ndarray, rows_per_chunk: int) -> int:
    """Count of values that are NaN/inf as float32, the inputs' type (a float64 beyond ±3.4e38 becomes inf), in
    chunks (a mapped file is read once, not into memory)."""
    if array.dtype.kind not in "fc":
        return 0
    with np.errstate(over="ignore"):  # the overflow is what is counted
        return sum(int(chunk.size - np.isfinite(chunk.astype(np.float32) if chunk.dtype.kind == "f" else chunk).sum())
                   for chunk in (array[a:a + rows_per_chunk] for a in range(0, len(array), rows_per_chunk)))


def chunk_rows(array: np.ndarray) -> int:
    return max(1, CHUNK_BYTES // max(1, array.itemsize * math.prod(array.shape[1:])))


def channel_stats(array: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) std per channel (axis 1) over `rows` of `array`, read in chunks in file order;
    shaped (1, C, 1, ...) like `standardize`'s, in float64 sums."""
    rows = np.sort(rows)
    reduce_axes = (0, *range(2, array.ndim))
    total = np.zeros(array.shape[1]), np.zeros(array.shape[1])
    count = 0
    step = chunk_rows(array)
    for a in range(0, len(rows), step):
        block = np.array(array[rows[a:a + step]], dtype=np.float32)  # one float32 copy of the chunk at a time
        total[0][:] += block.sum(axis=reduce_axes, dtype=np.float64)
        total[1][:] += np.square(block, out=block).sum(axis=reduce_axes, dtype=np.float64)
        count += block.size // array.shape[1]
    mean = total[0] / max(count, 1)
    var = (total[1] - count * mean**2) / max(count - 1, 1)
    shape = (1, array.shape[1], *([1] * (array.ndim - 2)))
    std = np.sqrt(np.clip(var, 0, None)).clip(1e-8)
    return torch.tensor(mean, dtype=torch.float32).reshape(shape), torch.tensor(std, dtype=torch.float32).reshape(shape)


def check_finite(array: np.ndarray, path: Path, what: str) -> None:
    bad = nonfinite(array, chunk_rows(array))
    check(bad == 0, f"{path}: {bad} NaN/inf value(s) in the {what}; clean or drop those samples" +
          (" (float32, the type they are trained in, holds at most ±3.4e38)" if array.dtype.itemsize > 4 else ""))


def read_pair(x_file: str, y_file: str | None, x_name: str, y_name: str, key: str,
              mmap_threshold_mb: float) -> tuple[np.ndarray, np.ndarray, Path]:
    """Inputs and targets of one file (or pair of files), checked to be finite numbers, one target per input."""
    xp = Path(x_file).expanduser()
    check(xp.suffix.lower() != ".npy" or y_file is not None, f"data.{key}={x_file} is an .npy of inputs: give "
          f"its targets in data.{key.replace('path', 'y_path')}=TARGETS.npy")
    x = read_array(xp, x_name, mmap_threshold_mb, "inputs")
    yp = Path(y_file).expanduser() if y_file is not None else xp
    y = read_array(yp, y_name, None, "targets")  # targets are always in memory
    check(x.ndim >= 1 and y.ndim >= 1 and len(x) == len(y), f"{xp} has {len(x) if x.ndim else 0} input "
          f"sample(s) {tuple(x.shape)} but {yp} has {len(y) if y.ndim else 0} target(s) {tuple(y.shape)}; "
          "they must match one to one")
    check(len(x) > 0, f"{xp} holds no samples")
    check(x.dtype.kind in "biuf", f"{xp}: inputs of dtype {x.dtype} are not numbers")
    check(y.dtype.kind in "biuf", f"{yp}: targets of dtype {y.dtype} are not numbers (give class indices)")
    check_finite(x, xp, "inputs")
    check_finite(y, yp, "targets")
    return x, y, xp


Pair = tuple[np.ndarray, np.ndarray, Path]


def read_files(path: str, y_path: str | None, others: dict[str, tuple[str | None, str | None]], x_key: str,
               y_key: str, mmap_threshold_mb: float) -> tuple[Pair, dict[str, Pair]]:
    """The pooled pair of `path`, and the splits given as their own: an .npz's x_val/x_test members or the
    val/test files in `others` (split -> (inputs file, targets file))."""
    main = Path(path).expanduser()
    given: dict[str, Pair] = {}
    if main.suffix.lower() == ".npz" and y_path is None and f"{x_key}_train" in npz_files(main):
        members = npz_files(main)
        for s in SPLITS:
            if f"{x_key}_{s}" in members:
                given[s] = read_pair(path, None, f"{x_key}_{s}", f"{y_key}_{s}", "path", mmap_threshold_mb)
        pool = given.pop("train")
    else:
        pool = read_pair(path, y_path, x_key, y_key, "path", mmap_threshold_mb)
    for s, (xf, yf) in others.items():
        if xf is not None:
            check(s not in given, f"data.{s}_path: {main} already holds the {s} split")
            given[s] = read_pair(xf, yf, x_key, y_key, f"{s}_path", mmap_threshold_mb)
    for s, (x, _, xp) in given.items():
        check(x.shape[1:] == pool[0].shape[1:], f"{xp}: {s} samples have shape {tuple(x.shape[1:])}, the train "
              f"samples of {pool[2]} {tuple(pool[0].shape[1:])}")
    return pool, given


def input_splits(parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                 standardize: bool) -> tuple[dict[str, Any], Any, Any]:
    """Each split's inputs (float32 tensors in memory, or MappedRows over a memory-mapped file), standardized by
    the train split's mean and std per channel when `standardize`; also returns that mean and std (or None).
    Empties `parts` (split -> (inputs, targets, rows)) so the files' arrays are freed before the statistics."""
    x_train, _, train_rows = parts["train"]
    channels = x_train.ndim >= 2  # (N,) inputs become (N, 1): one feature
    mean = std = None
    if standardize and any(isinstance(x, np.memmap) for x, _, _ in parts.values()):  # stats in chunks from the file
        mean, std = channel_stats(x_train if channels else x_train[:, None], train_rows)
    xs: dict[str, Any] = {}
    for s, (x, _, rows) in parts.items():
        if isinstance(x, np.memmap):
            xs[s] = MappedRows(x if channels else x.reshape(-1, 1), rows, mean, std)
        else:
            xs[s] = torch.from_numpy(np.asarray(x[rows], dtype=np.float32))
            xs[s] = xs[s] if channels else xs[s].unsqueeze(1)
    parts.clear()  # the files' arrays (the caller's last reference): only the split copies (or the maps) stay
    del x_train, x
    in_memory = [s for s in SPLITS if isinstance(xs[s], torch.Tensor)]
    if standardize and in_memory:
        if mean is None:  # standardize()'s statistics, shaped (1, C, ...) like channel_stats', applied in place
            mean, std = (stat[None] for stat in train_stats(xs["train"]))
        for s in in_memory:
            xs[s].sub_(mean).div_(std)
    return xs, mean, std


def array_files_exist(**options: Any) -> None:
    check(options["path"] is not None, "data=arrays needs data.path=FILE: an .npz with arrays x and y, or an .npy "
          "of inputs with data.y_path=TARGETS.npy")
    check_files("an .npy or .npz file", **{k: options[k] for k in options if k.endswith("path")})


@DATASETS.register("arrays", inputs=array_files_exist, task=task_of)
def build_arrays(*, seed: int, path: str | None = None, y_path: str | None = None, val_path: str | None = None,
                 val_y_path: str | None = None, test_path: str | None = None, test_y_path: str | None = None,
                 x_key: str = "x", y_key: str = "y", mmap_threshold_mb: Annotated[float, NonNegative] = 1024.0,
                 task: Task = "auto", max_classes: Annotated[int, Range(ge=2)] = 100, standardize: bool = True,
                 standardize_target: bool = True, fractions: Fractions = (0.6, 0.2, 0.2),
                 stratify: bool = False) -> DataBundle:
    """Inputs (N, ...) as float32 tensors, or MappedRows for memory-mapped .npy files (above mmap_threshold_mb MB)."""
    check(path is not None, "data=arrays needs data.path=FILE")  # the door says more (array_files_exist)
    pool, given = read_files(path, y_path, {"val": (val_path, val_y_path), "test": (test_path, test_y_path)},
                             x_key, y_key, mmap_threshold_mb)

    # pooled rows by fractions (per class with stratify), the given files as their split; inputs in memory or mapped
    where = f"the targets of {pool[2] if y_path is None else Path(y_path).expanduser()}"
    labels = strata({"train": pool[1], **{s: g[1] for s, g in given.items()}}, task, max_classes,
                    where) if stratify else None
    parts = {s: (pool[0], pool[1], idx.numpy())
             for s, idx in split_pool(len(pool[0]), list(fractions), set(given), seed, labels).items()}
    parts.update({s: (x, y, np.arange(len(x))) for s, (x, y, _) in given.items()})
    parts = {s: parts[s] for s in SPLITS}
    y = encode_targets({s: y[rows] for s, (_, y, rows) in parts.items()}, task, max_classes, standardize_target,
                       where)
    del pool, given  # input_splits frees the files' arrays once it has the split copies
    xs, mean, std = input_splits(parts, standardize)
    splits = [Split(xs[s], y.y[s]) for s in SPLITS]
    prep = {"data": "arrays", "input": "array", "x_key": x_key, **(scaling(mean, std) if mean is not None else {}),
            **({"target": y.scaling} if y.scaling else {})}  # raw input: the file's numbers, as float32
    return DataBundle(*splits, task=y.task, num_outputs=y.num_outputs, class_names=y.class_names,
                      chance_mse=y.chance_mse, preprocessing=prep)
