"""Reading CIFAR-10's python batches without running anything from them.

The batches are pickles, and a plain `pickle.load` calls whatever global a file names (`posix.system`, ...):
a crafted file in `data.root` would run code. `load_batch` unpickles with `BatchUnpickler`, which resolves
only the globals the real batches (Python 2 cPickle, protocol 2, numpy 1.x) and re-saved copies (Python 3,
numpy 1.x or 2.x, protocols 2 to 5) need to rebuild their dict of bytes, lists of ints and one uint8 array,
refuses everything else before it is imported, then checks the content. Each problem is one ConfigError line
naming the file.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from dltrain.core.registry import ConfigError, check, first_line

try:  # numpy >= 2 (and 1.26's forward-compatible alias)
    from numpy._core import multiarray, numeric
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core import multiarray, numeric

PIXELS = 3 * 32 * 32  # one image: 1024 red, then 1024 green, then 1024 blue bytes (row-major 32x32)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")  # batches.meta


def _latin1(path: Path) -> Callable[..., bytes]:
    """`_codecs.encode(text, "latin1")`: how Python 3 writes a bytes object at protocol 2; no other codec
    (a codec name is a module lookup)."""
    def encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        check(isinstance(text, str) and encoding in ("latin1", "latin-1") and errors == "strict",
              f"{path} is not a CIFAR-10 batch: it calls _codecs.encode with encoding {encoding!r}; "
              "only latin1 text, as Python writes bytes, is accepted")
        return text.encode("latin1")
    return encode


def _empty_bytes(path: Path) -> Callable[..., bytes]:
    """`bytes()`: how Python 3 writes b"" at protocol 2; `bytes(n)` would allocate n bytes, so no arguments."""
    def empty(*args: Any) -> bytes:
        check(not args, f"{path} is not a CIFAR-10 batch: it calls bytes{args!r:.40}; only bytes() is accepted")
        return b""
    return empty


SAFE_GLOBALS: dict[tuple[str, str], Any] = {  # (module, name) as written in the file -> the object it gets
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,  # ndarray pickles, numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,  # ndarray pickles, numpy 2.x
    ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,  # ndarray pickles at protocol 5, numpy 1.x
    ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,  # the same, numpy 2.x
}
WRAPPED_GLOBALS: dict[tuple[str, str], Callable[[Path], Callable[..., bytes]]] = {
    ("_codecs", "encode"): _latin1,
    ("__builtin__", "bytes"): _empty_bytes,  # protocol 2 names builtins by their Python 2 module
    ("builtins", "bytes"): _empty_bytes,
}


class BatchUnpickler(pickle.Unpickler):
    """An Unpickler whose `find_class` hands out only SAFE_GLOBALS/WRAPPED_GLOBALS: a refused global is
    neither imported nor called."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        super().__init__(handle, encoding="bytes")  # Python 2 str -> bytes, as the real batches' keys are
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[module, name]
        if (module, name) in WRAPPED_GLOBALS:
            return WRAPPED_GLOBALS[module, name](self.path)
        raise ConfigError(f"{self.path} is not a CIFAR-10 batch: it asks to load {module}.{name}; "
                          "refusing to run code from a data file")

    def persistent_load(self, pid: Any) -> Any:
        raise ConfigError(f"{self.path} is not a CIFAR-10 batch: it holds a persistent reference")


def unpickle(path: Path) -> Any:
    """The object in `path`, rebuilt from safe globals only."""
    try:
        with open(path, "rb") as handle:
            return BatchUnpickler(handle, path).load()
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to parse an untrusted file is "not a batch", one line
        raise ConfigError(f"{path} is not a readable CIFAR-10 batch ({type(err).__name__}: {first_line(err)}); "
                          "replace it with the original file") from None


def labels_of(raw: Any) -> np.ndarray | None:
    """b"labels" as int64 when it is a list (or 1-D integer array) of class indices 0..9, else None."""
    if isinstance(raw, np.ndarray):
        ok = raw.ndim == 1 and raw.dtype.kind in "iu" and bool(((raw >= 0) & (raw < len(CLASSES))).all())
        return raw.astype(np.int64) if ok else None
    if isinstance(raw, (list, tuple)) and all(type(v) is int and 0 <= v < len(CLASSES) for v in raw):
        return np.array(raw, dtype=np.int64)  # `type is int`: no bools, no floats, no int subclasses
    return None


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9."""
    batch = unpickle(path)
    check(isinstance(batch, dict) and b"data" in batch and b"labels" in batch,
          f"{path} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels', got {describe(batch)}")
    data = batch[b"data"]
    check(isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == PIXELS,
          f"{path} is not a CIFAR-10 batch: b'data' must be a (N, {PIXELS}) uint8 array, got "
          f"{describe(data)}")
    labels = labels_of(batch[b"labels"])
    check(labels is not None and len(labels) == len(data),
          f"{path} is not a CIFAR-10 batch: b'labels' must be {len(data)} ints in 0..{len(CLASSES) - 1} "
          f"(one per image), got {describe(batch[b'labels'])}")
    return data.reshape(-1, 3, 32, 32), labels


def describe(value: Any) -> str:
    """A short description of an unexpected value for an error line: type, shape/length, dtype or range."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, dict):
        keys = ", ".join(repr(k)[:40] for k in list(value)[:6])
        return f"a dict with keys {keys}{', ...' if len(value) > 6 else ''}"
    if isinstance(value, (list, tuple)):
        ints = [v for v in value if type(v) is int]
        if len(ints) == len(value):
            span = f" from {min(ints)} to {max(ints)}" if ints else ""
            return f"a {type(value).__name__} of {len(value)} ints{span}"
        kinds = sorted({type(v).__name__ for v in value if type(v) is not int})
        return f"a {type(value).__name__} of {len(value)} values, some of type {', '.join(kinds[:3])}"
    return type(value).__name__
