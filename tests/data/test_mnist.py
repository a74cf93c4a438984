"""data=mnist's default: MNIST's real t10k files shipped inside the package, read offline with no data.root; an
explicit data.root wins; the official split, which needs the 60,000 training images dltrain does not ship, is one
line naming what to download. Nothing the project ships, tests or documents reads a folder beside the clone."""
from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from dltrain.run.assemble import build
from tests.conftest import MNIST_T10K, REPO, cli, compose, parse

# MD5s of the decompressed IDX files, as published for MNIST's official t10k pair (loaders that check the files
# from yann.lecun.com list these); the .gz wrapper carries a timestamp and differs between copies
PUBLISHED_MD5 = {"t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
                 "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637"}
SMALL_MLP = ["model=mlp", "model.hidden=[8]"]


def test_the_shipped_files_are_mnists_official_test_set_with_its_licence_beside_them() -> None:
    for name, digest in PUBLISHED_MD5.items():
        assert hashlib.md5(gzip.decompress((MNIST_T10K / name).read_bytes())).hexdigest() == digest, name
    note = (MNIST_T10K / "README.md").read_text()
    for words in ("Yann LeCun", "Corinna Cortes", "Burges", "CC BY-SA 3.0", "http://yann.lecun.com/exdb/mnist/"):
        assert words in note


def first_images(source: Path, target: Path, count: int) -> None:
    """A copy of the t10k pair cut to its first `count` images and labels (the IDX count rewritten)."""
    for name, header in (("t10k-images-idx3-ubyte.gz", 16), ("t10k-labels-idx1-ubyte.gz", 8)):
        raw = bytearray(gzip.decompress((source / name).read_bytes()))
        per_item = (len(raw) - header) // int.from_bytes(raw[4:8], "big")
        raw[4:8] = count.to_bytes(4, "big")
        (target / name).write_bytes(gzip.compress(bytes(raw[:header + count * per_item])))


def test_data_mnist_without_a_root_reads_the_shipped_set_and_an_explicit_root_wins(tmp_path) -> None:
    assert compose(["data=mnist"])["data"]["root"] is None
    data = build(parse(["data=mnist", *SMALL_MLP])).data
    assert (len(data.train), len(data.val), len(data.test)) == (8000, 1000, 1000)
    for experiment in ("cnn_vs_mlp_mnist", "mnist_pytorch_example"):  # the MNIST experiments read it too
        assert compose([f"experiment={experiment}"])["data"]["root"] is None
    first_images(MNIST_T10K, tmp_path, 100)
    small = build(parse(["data=mnist", f"data.root={tmp_path}", "data.batch_size=16", *SMALL_MLP])).data
    assert (len(small.train), len(small.val), len(small.test)) == (80, 10, 10)


def test_the_official_split_without_the_training_images_is_one_line_naming_the_download(tmp_path) -> None:
    result = cli(["data=mnist", "data.use_official_test=true", "trainer.max_epochs=1"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith("dltrain: error: data.use_official_test=true needs MNIST's 60,000 training images")
    assert "download train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz from " \
           "https://ossci-datasets.s3.amazonaws.com/mnist/ into a folder" in lines[0]
    assert "data.root=FOLDER" in lines[0] and "data.download=true" in lines[0]


@pytest.mark.slow
def test_a_non_editable_install_ships_the_mnist_files(tmp_path, wheel_site) -> None:
    shipped = wheel_site / "dltrain" / "data" / "mnist_t10k"
    assert sorted(p.name for p in shipped.iterdir()) == ["README.md", *PUBLISHED_MD5]
    code = ("from dltrain.data import DATASETS; from dltrain.data.images import EMBEDDED_MNIST; "
            "d = DATASETS.build(DATASETS.parse({'name': 'mnist'}), seed=0); "
            "print(EMBEDDED_MNIST, len(d.train) + len(d.val) + len(d.test))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(wheel_site), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(shipped), "10000"]


def test_nothing_the_project_ships_tests_or_documents_reads_a_folder_beside_the_clone() -> None:
    """A user's clone has no shared data folder beside it: no text file of the checkout names one."""
    needles = (".." + "/shared", "shared" + "/data/mnist")  # split: this file must not match itself
    roots = [REPO / name for name in ("dltrain", "conf", "experiments", "tests", "bench", "docs")]
    files = [p for root in roots for p in root.rglob("*") if p.is_file() and p.suffix not in (".gz", ".pyc")]
    files += [REPO / name for name in ("Makefile", "pyproject.toml", "README.md", "CHANGELOG.md", ".ci/run")]
    files += list((REPO / "examples").glob("*.md"))
    found = [f"{p.relative_to(REPO)}: {needle}" for p in files for needle in needles
             if needle in p.read_text(errors="replace")]
    assert found == []
