"""How large an input file may grow once decoded, checked from what the file declares before anything is decoded
or inflated: an image's size in its header, an .npz member's uncompressed size in the zip's central directory. A
small file that would expand to gigabytes (a decompression bomb, a zip bomb) is one line, not a machine out of memory.

- Images (data=image_folder, `dltrain predict` on images): at most Pillow's `PIL.Image.MAX_IMAGE_PIXELS` pixels
  (89,478,485, ~89.5 megapixels: where Pillow warns of a decompression bomb; dltrain refuses, Pillow only warns).
  A project plugin may raise it (`PIL.Image.MAX_IMAGE_PIXELS = ...`).
- `dltrain predict` on .npy/.npz: at most `PREDICT_MB` MiB per file (an .npy's size, an .npz member's inflated size).
- data=arrays in training: an .npz member (read whole: numpy cannot memory-map inside a zip) at most the memory
  available (Linux's MemAvailable); .npy files larger than data.mmap_threshold_mb are memory-mapped, never read whole.
"""
from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from dltrain.core.registry import ConfigError, check, first_line

PREDICT_MB = 1024  # MiB of one .npy/.npz file that `dltrain predict` reads (a 2 MB zip bomb inflates to 2 GiB)
FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: a larger number (a float64) becomes inf in the model


class Limit(NamedTuple):
    mb: float  # MiB of one array read into memory, as its file declares it
    means: str  # what the limit is, and what to do about a file above it


PREDICT = Limit(PREDICT_MB, "that predict reads from one file; split it into smaller files (predict takes several)")


def memory_limit() -> Limit | None:
    """The memory this machine has available now (Linux's MemAvailable; None where unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return Limit(kib / 1024, "of memory available; numpy reads an .npz member whole: save large inputs as .npy, "
                             "memory-mapped above data.mmap_threshold_mb")


def mib(size: float) -> str:
    return f"{size / 2**20:,.0f} MiB" if size >= 2**20 else f"{size / 2**20:.2f} MiB"


def check_inflated(path: Path, member: str | None, limit: Limit | None) -> None:
    """Refuse an array beyond `limit` before reading it: an .npy of its own size, or an .npz member of the
    uncompressed size in the zip's central directory (zipfile inflates a member no further than that)."""
    if limit is None:
        return
    if path.suffix.lower() == ".npy":
        size = path.stat().st_size
        check(size <= limit.mb * 2**20, f"{path} holds {mib(size)}, more than the {limit.mb:,.0f} MiB {limit.means}")
        return
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        name = f"{member}.npy" if f"{member}.npy" in names else str(member)
        size = archive.getinfo(name).file_size if name in names else 0  # a missing member: its reader says so
    check(size <= limit.mb * 2**20, f"{path}: its array {member!r} inflates to {mib(size)} ({mib(path.stat().st_size)} "
          f"on disk), more than the {limit.mb:,.0f} MiB {limit.means}")


@contextmanager
def open_image(path: Path) -> Iterator[Any]:
    """Pillow's image, opened (its header read, nothing decoded) and refused in one line when it has more pixels
    than Pillow's MAX_IMAGE_PIXELS: Pillow itself only warns below twice that, and decodes."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ConfigError(f"{path}: {first_line(err).rstrip('.')}; resize it to at most {Image.MAX_IMAGE_PIXELS:,} "
                          "pixels (PIL.Image.MAX_IMAGE_PIXELS)") from None
    with image:
        yield image
