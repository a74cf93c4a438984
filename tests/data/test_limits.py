"""Input size limits (dltrain/data/limits.py): a file that would expand to gigabytes once decoded or inflated is
refused in one line from what it declares, before it is read. The image and training-side cases are in
tests/test_predict.py and tests/data/test_files.py, beside the readers' other bad inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import cli, run
from tests.test_predict import one_error


def zip_bomb(path: Path, mib: int) -> Path:
    """A real zip bomb: an .npz whose array x, float64 zeros (N, 1, 8, 8), inflates to `mib` MiB from 1/1000 of that.
    Its deflate stream is one compressed MiB of zeros repeated (after a full flush each stands alone), not `mib` MiB
    compressed; the zip's headers are written by hand (zipfile writes no precompressed data)."""
    import io
    import struct
    import zlib

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False,
                                                "shape": (mib * 2**20 // 512, 1, 8, 8)})
    header, zeros = head.getvalue(), bytes(2**20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    data = start + block * mib + deflate.flush()
    crc = zlib.crc32(header)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    size, name = len(header) + mib * 2**20, b"x.npy"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size, len(name),
                          0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    return path


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """1.1 MB that inflate to 1,100 MiB, more than predict reads from one file (1,024 MiB): one line, from the zip's
    central directory (a 2 GiB bomb took 5.7 GB and 80 s to predict 4 million rows of zeros)."""
    import zipfile

    bomb = zip_bomb(tmp_path / "bomb.npz", 1100)
    with zipfile.ZipFile(bomb) as archive:
        assert archive.testzip() is None and archive.getinfo("x.npy").file_size > 1100 * 2**20  # a sound zip
    run_dir = tmp_path / "run"
    run(["model=mlp", "model.hidden=[8]", "trainer.max_epochs=1", "trainer.log_every_n_steps=0"], run_dir)
    result = cli(["predict", "run", "bomb.npz"], cwd=tmp_path)
    assert one_error(result.returncode, result.stderr) == (
        "dltrain: error: bomb.npz: its array 'x' inflates to 1,100 MiB (1 MiB on disk), more than the 1,024 MiB that "
        "predict reads from one file; split it into smaller files (predict takes several)")
