"""CIFAR-10's python batches: read without running code from them (issue "Nothing lost, nothing run"), read
in every format the real and re-saved files come in, checked for content, and trained on."""
from __future__ import annotations

import io
import os
import pathlib
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dltrain.core.registry import ConfigError
from dltrain.data import DATASETS, DataBundle
from dltrain.data.cifar import CLASSES, PIXELS, load_batch

# one mean colour (R, G, B) per class, far apart: the class is learnable from the average pixel alone
PALETTE = np.array([[40, 40, 40], [215, 40, 40], [40, 215, 40], [40, 40, 215], [215, 215, 40],
                    [215, 40, 215], [40, 215, 215], [215, 215, 215], [128, 128, 40], [40, 128, 128]])


def build(seed: int = 0, **kwargs: Any) -> DataBundle:
    return DATASETS.build(DATASETS.parse({"name": "cifar10", **kwargs}), seed=seed)


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle with numpy 1.x wrote in the real batches: protocol 2, every str/bytes as a
    Python 2 str opcode (SHORT_BINSTRING: b'U\\x04data'), arrays via numpy.core.multiarray._reconstruct."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        size = len(raw)
        head = pickle.SHORT_BINSTRING + bytes([size]) if size < 256 else pickle.BINSTRING + struct.pack("<i", size)
        self.write(head + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if getattr(obj, "__name__", "") == "_reconstruct":  # numpy 2 would write numpy._core.multiarray
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dump(obj: Any, path: Path, flavour: str) -> None:
    """`obj` pickled as the real files (py2) or as Python 3 re-saves them (protocol 2, default, 5)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if flavour == "py2":
        buffer = io.BytesIO()
        Py2Pickler(buffer, protocol=2).dump(obj)
        path.write_bytes(buffer.getvalue())
    else:
        protocol = {"protocol2": 2, "default": pickle.DEFAULT_PROTOCOL, "protocol5": 5}[flavour]
        path.write_bytes(pickle.dumps(obj, protocol=protocol))


def colour_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 as in the batches: per image its class colour plus pixel noise (std 30)."""
    mean = PALETTE[labels][:, :, None]  # (N, 3, 1): one value per channel plane
    noisy = mean + rng.normal(0, 30, (len(labels), 3, 1024))
    return np.clip(noisy, 0, 255).astype(np.uint8).reshape(len(labels), PIXELS)


def write_cifar(root: Path, flavour: str = "py2", per_batch: int = 100, train_batches: int = 2,
                seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A cifar-10-batches-py folder in the real layout; returns what was written per file."""
    rng = np.random.default_rng(seed)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, train_batches + 1)] + ["test_batch"]
    for name in names:
        labels = rng.integers(0, 10, per_batch)
        data = colour_images(labels, rng)
        batch = {b"batch_label": f"{name} of the test set".encode(), b"labels": [int(v) for v in labels],
                 b"data": data, b"filenames": [f"img_{i:05d}.png".encode() for i in range(per_batch)]}
        dump(batch, root / "cifar-10-batches-py" / name, flavour)
        written[name] = (data, labels)
    return written


FLAVOURS = ["py2", "protocol2", "default", "protocol5"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_real_format_batches_are_read_exactly(tmp_path: Path, flavour: str) -> None:
    written = write_cifar(tmp_path, flavour)
    for name, (data, labels) in written.items():
        images, got = load_batch(tmp_path / "cifar-10-batches-py" / name)
        assert images.shape == (100, 3, 32, 32) and images.dtype == np.uint8 and got.dtype == np.int64
        assert np.array_equal(images.reshape(100, PIXELS), data) and np.array_equal(got, labels)
    data = build(root=str(tmp_path), fractions=[0.8, 0.1, 0.1])
    assert data.in_shape == (3, 32, 32) and (len(data.train), len(data.val), len(data.test)) == (240, 30, 30)
    pooled = torch.cat([data.train.y, data.val.y, data.test.y]).sort().values
    assert torch.equal(pooled, torch.from_numpy(np.sort(np.concatenate([w[1] for w in written.values()]))))
    per_channel = data.train.x.transpose(0, 1).flatten(1)  # standardized by the train split, per channel
    assert per_channel.mean(1).abs().max() < 1e-4 and (per_channel.std(1) - 1).abs().max() < 1e-3
    assert data.class_names == list(CLASSES) and data.model_args() == {} and data.num_outputs == 10
    official = build(root=str(tmp_path), fractions=[0.8, 0.2, 0.0], use_official_test=True)
    assert len(official.test) == 100 and torch.equal(official.test.y, torch.from_numpy(written["test_batch"][1]))
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()  # the official split, without its test batch
    with pytest.raises(ConfigError, match="needs CIFAR-10's data_batch_1..5 and test_batch in .*: unpack "
                       r"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz there"):
        build(root=str(tmp_path), use_official_test=True)


def test_a_malicious_batch_runs_nothing_and_is_named(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Touch:  # what an attacker puts in a "batch": unpickling it calls Path.touch(marker)
        def __reduce__(self) -> tuple:
            return pathlib.Path.touch, (marker,)

    payload = pickle.dumps({b"data": Touch(), b"labels": [0]})
    pickle.loads(payload)  # control: a plain pickle.load does run it
    assert marker.exists()
    marker.unlink()
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.parent.mkdir()
    batch.write_bytes(payload)
    with pytest.raises(ConfigError) as err:
        build(root=str(tmp_path))
    text = str(err.value)
    assert not marker.exists()
    assert "\n" not in text and str(batch) in text and "pathlib.Path.touch" in text and "refusing" in text


class System:
    """os.system(command) on unpickling: the classic payload, pickled as posix.system (nt.system on Windows)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


@pytest.mark.parametrize("flavour", ["protocol2", "default"])
@pytest.mark.parametrize("where", ["top", "labels", "test_batch"])
def test_code_anywhere_in_any_batch_is_refused(tmp_path: Path, flavour: str, where: str) -> None:
    write_cifar(tmp_path, flavour, per_batch=10)
    marker = tmp_path / "marker"
    evil = System(f"touch {marker}")
    name = "test_batch" if where == "test_batch" else "data_batch_2"
    good = {b"data": np.zeros((1, PIXELS), np.uint8), b"labels": [0]}
    obj = evil if where == "top" else {**good, b"labels": [0, evil]} if where == "labels" else {**good, b"x": evil}
    dump(obj, tmp_path / "cifar-10-batches-py" / name, flavour)
    with pytest.raises(ConfigError) as err:
        build(root=str(tmp_path))
    text = str(err.value)
    assert not marker.exists()
    assert "\n" not in text and str(tmp_path / "cifar-10-batches-py" / name) in text
    assert f"{os.system.__module__}.system" in text


def test_only_latin1_text_and_empty_bytes_get_through_the_helpers(tmp_path: Path) -> None:
    import codecs

    class Rot13:  # _codecs.encode is allowed for protocol 2's bytes, but with latin1 only
        def __reduce__(self) -> tuple:
            return codecs.encode, ("data", "rot13")

    class BigBytes:  # bytes() is allowed for protocol 2's b"", but not bytes(n): n bytes of memory
        def __reduce__(self) -> tuple:
            return bytes, (10 ** 6,)

    for evil, expected in ((Rot13(), "'rot13'"), (BigBytes(), "bytes(1000000")):
        path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
        dump({b"data": evil, b"labels": [0]}, path, "protocol2")
        with pytest.raises(ConfigError) as err:
            build(root=str(tmp_path))
        assert "\n" not in str(err.value) and str(path) in str(err.value) and expected in str(err.value)
    dump({b"data": np.zeros((4, PIXELS), np.uint8), b"labels": [3, 4, 5, 6], b"batch_label": b""}, path, "protocol2")
    data = build(root=str(tmp_path), fractions=[0.5, 0.5, 0.0])  # b"" at protocol 2 is a call of bytes()
    assert sorted(torch.cat([data.train.y, data.val.y]).tolist()) == [3, 4, 5, 6]


def bad_content(case: str) -> Any:
    data, labels = np.zeros((4, PIXELS), np.uint8), [0, 1, 2, 9]
    return {"label 10": {b"data": data, b"labels": [0, 1, 2, 10]},
            "label -1": {b"data": data, b"labels": [0, -1, 2, 3]},
            "bool labels": {b"data": data, b"labels": [True, False, True, False]},
            "float labels": {b"data": data, b"labels": [0.0, 1.0, 2.0, 3.0]},
            "too few labels": {b"data": data, b"labels": labels[:3]},
            "wrong width": {b"data": np.zeros((4, PIXELS - 1), np.uint8), b"labels": labels},
            "float data": {b"data": data.astype(np.float32), b"labels": labels},
            "3-d data": {b"data": data.reshape(4, 3, 1024), b"labels": labels},
            "str keys": {"data": data, "labels": labels},
            "a list": [data, labels]}[case]


@pytest.mark.parametrize("case", ["label 10", "label -1", "bool labels", "float labels", "too few labels",
                                  "wrong width", "float data", "3-d data", "str keys", "a list", "truncated",
                                  "not a pickle"])
def test_wrong_content_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    write_cifar(tmp_path, "default", per_batch=10)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    elif case == "not a pickle":
        path.write_bytes(b"GIF89a this is an image, not a batch")
    else:
        dump(bad_content(case), path, "default")
    with pytest.raises(ConfigError) as err:
        build(root=str(tmp_path))
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "CIFAR-10 batch" in text, text


def test_training_on_cifar_format_files_learns_the_colours(tmp_path: Path) -> None:
    from tests.conftest import run

    write_cifar(tmp_path / "cifar", "py2", per_batch=200, train_batches=2)
    report = run(["data=cifar10", f"data.root={tmp_path / 'cifar'}", "data.fractions=[0.7,0.15,0.15]",
                  "model=mlp", "model.hidden=[32]", "optim=adam", "trainer.max_epochs=5",
                  "trainer.log_every_n_steps=0"], tmp_path / "run")
    assert report["status"] == "completed"
    assert report["test"]["test/acc"] > 0.6  # 90 test images; chance is 0.1
