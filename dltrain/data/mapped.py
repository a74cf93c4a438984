"""Rows of a memory-mapped `.npy` file used as a split (`MappedRows`), and the chunked passes over such a file at
load time (non-finite count, per-channel mean/std), which read it in CHUNK_BYTES pieces, never whole."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

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
