"""Atomic writes of the files a later command reads (config.yaml, metrics.json, ledgers): a temp file in the same
folder, fsync, then rename, so a crash leaves the old file or the new one, never half of one."""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def looked_in(path: str | Path) -> str:
    """For a message about a path that was not found: where a relative one was looked for (the working folder)."""
    return "" if Path(path).expanduser().is_absolute() else f" (looked in {Path.cwd()}, the working folder)"


def starts_with(path: Path, magic: bytes) -> bool:
    """Whether the file begins with these bytes (a format's signature)."""
    with open(path, "rb") as handle:
        return handle.read(len(magic)) == magic


def umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~umask()  # what open() gives a new file: readable as the user's umask allows


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call write(handle) on a temp file beside `path`, then rename it over `path`. An OSError (full disk, read-only
    or deleted folder) is raised naming `path` itself, not the temp file."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 would hide the run from a teammate or a TensorBoard of another user
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
        sync_folder(path.parent)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):  # a failing clean-up must not hide the error that caused it
                Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename != str(path):
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def sync_folder(folder: Path) -> None:
    """The rename survives a power cut only once the folder's entry is on disk too (a killed process needs no
    fsync). Best effort: the new file is already in place, and some file systems cannot fsync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def strict_json(value: Any) -> Any:
    """NaN and infinities as null: metrics.json stays strict JSON that any reader accepts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n")
