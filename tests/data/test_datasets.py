"""Datasets: the real MNIST t10k files, the standard file layouts, generated sequence tasks, text windows,
and on-device augmentation."""
from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from dltrain.core.registry import ConfigError
from dltrain.data import DATASETS
from dltrain.data.augment import build_augment, hflip, random_crop, rotate
from dltrain.data.images import download, md5
from tests.conftest import MNIST_T10K


def build(name: str, seed: int = 0, **kwargs):
    return DATASETS.build(DATASETS.parse({"name": name, **kwargs}), seed=seed)


def test_real_mnist_t10k_pools_and_splits_by_fractions() -> None:
    data = build("mnist", root=str(MNIST_T10K), fractions=[0.7, 0.2, 0.1])
    assert data.in_shape == (1, 28, 28)
    assert (len(data.train), len(data.val), len(data.test)) == (7000, 2000, 1000)
    labels = torch.cat([data.train.y, data.val.y, data.test.y])
    assert labels.min() == 0 and labels.max() == 9 and torch.bincount(labels).min() > 800
    assert abs(data.train.x.mean().item()) < 1e-4 and abs(data.train.x.std().item() - 1) < 1e-3
    again = build("mnist", root=str(MNIST_T10K), fractions=[0.7, 0.2, 0.1])
    assert torch.equal(again.test.x, data.test.x)  # deterministic by seed
    other = build("mnist", seed=1, root=str(MNIST_T10K), fractions=[0.7, 0.2, 0.1])
    assert not torch.equal(other.test.y, data.test.y)
    # disjoint splits: every one of the 10,000 images lands in exactly one split
    rows = torch.cat([data.train.x, data.val.x, data.test.x]).flatten(1)
    assert torch.unique(rows, dim=0).shape[0] == torch.unique(rows[:7000], dim=0).shape[0] + \
        torch.unique(rows[7000:9000], dim=0).shape[0] + torch.unique(rows[9000:], dim=0).shape[0]


def test_split_indices_are_disjoint_and_seeded() -> None:
    from dltrain.data import split_indices

    train, val, test = split_indices(100, (0.6, 0.3, 0.1), seed=3)
    together = torch.cat([train, val, test])
    assert (len(train), len(val), len(test)) == (60, 30, 10) and len(set(together.tolist())) == 100
    assert torch.equal(split_indices(100, (0.6, 0.3, 0.1), seed=3)[2], test)


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as handle:
        handle.write(payload)


@pytest.mark.parametrize("layout", ["plain", "gz", "torchvision_raw"])
def test_idx_layouts(tmp_path, layout: str) -> None:
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision_raw" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    images = np.arange(20 * 28 * 28).reshape(20, 28, 28) % 251
    gz = layout == "gz"
    suffix = ".gz" if gz else ""
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", np.arange(20) % 10, gz)
    data = build("mnist", root=str(tmp_path), fractions=[0.5, 0.25, 0.25])
    assert (len(data.train), len(data.val), len(data.test)) == (10, 5, 5)
    assert sorted(torch.cat([data.train.y, data.val.y, data.test.y]).tolist()) == sorted((np.arange(20) % 10).tolist())


def test_broken_idx_files_are_config_errors(tmp_path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28)), gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4), gz=False)
    with pytest.raises(ConfigError, match="disagree"):
        build("mnist", root=str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x09abc")  # says 9, holds 3
    with pytest.raises(ConfigError, match="truncated"):
        build("mnist", root=str(tmp_path))


def test_missing_files_say_which_and_where(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        build("fashion_mnist", root=str(tmp_path))
    text = str(err.value)
    assert str(tmp_path) in text and "t10k-images-idx3-ubyte" in text and "data.download=true" in text
    assert "\n" not in text


def test_a_tampered_download_is_rejected_and_leaves_nothing(tmp_path) -> None:
    source = tmp_path / "source.gz"
    source.write_bytes(b"not the real file")
    target = tmp_path / "out" / "file.gz"
    with pytest.raises(ConfigError, match="MD5"):
        download(source.as_uri(), target, "0" * 32)
    assert not target.exists() and not list(target.parent.glob("*.part"))
    download(source.as_uri(), target, md5(source))
    assert target.read_bytes() == b"not the real file"


def test_adding_problem_targets_are_the_marked_sums() -> None:
    data = build("adding", length=20, train_size=100, val_size=10, test_size=10)
    x, y = data.train.x, data.train.y
    assert x.shape == (100, 20, 2) and y.shape == (100, 1)
    markers = x[:, :, 1]
    assert torch.all(markers.sum(1) == 2)
    assert torch.all(markers[:, :10].sum(1) == 1) and torch.all(markers[:, 10:].sum(1) == 1)
    torch.testing.assert_close((x[:, :, 0] * markers).sum(1, keepdim=True), y)
    assert data.task == "regression" and math.isclose(data.chance_mse, 1 / 6) and data.model_args() == {}
    assert torch.equal(build("adding", length=20, train_size=100, val_size=10, test_size=10).train.x, x)
    big = build("adding", length=20, train_size=20000, val_size=0, test_size=0).train.y
    assert abs(((big - 1.0) ** 2).mean().item() - data.chance_mse) < 0.01  # predicting 1.0 = chance


def test_digit_rows_and_sine() -> None:
    rows = build("digit_rows")
    assert rows.in_shape == (8, 8) and rows.task == "classification" and rows.train.y.dtype == torch.long
    assert 1795 <= len(rows.train) + len(rows.val) + len(rows.test) <= 1797 and rows.num_outputs == 10
    sine = build("sine", window=16, horizon=2, train_size=50, val_size=5, test_size=5)
    assert sine.train.x.shape == (50, 16, 1) and sine.train.y.shape == (50, 2)
    # a sine is determined by three samples: the next value follows sin's recurrence exactly for fixed period
    x = sine.train.x[:, :, 0]
    assert torch.all(x.abs() <= 1) and torch.all(sine.train.y.abs() <= 1)


def test_sine_targets_continue_the_wave() -> None:
    data = build("sine", window=8, horizon=1, min_period=10.0, max_period=10.0, train_size=20, val_size=1,
                 test_size=1)
    x, y = data.train.x[:, :, 0], data.train.y[:, 0]
    c = 2 * math.cos(2 * math.pi / 10)  # sin(a + 2h) = 2cos(h) sin(a + h) - sin(a)
    torch.testing.assert_close(y, c * x[:, -1] - x[:, -2], atol=1e-5, rtol=0)


def test_text_windows_shift_by_one_and_splits_are_contiguous(tmp_path) -> None:
    corpus = tmp_path / "c.txt"
    text = "".join(chr(97 + i % 26) for i in range(1000))
    corpus.write_text(text)
    data = build("text", path=str(corpus), seq_len=10, fractions=[0.8, 0.1, 0.1])
    vocab = data.vocab
    decode = lambda t: "".join(vocab[i] for i in t.tolist())  # noqa: E731
    assert decode(data.train.x[0]) == text[:10] and decode(data.train.y[0]) == text[1:11]
    assert decode(data.val.x[0]) == text[800:810]  # val starts where train's share ends
    assert data.num_outputs == 26 and data.per_step_targets and data.class_names is None
    assert data.model_args() == {"vocab_size": 26, "per_step": True}
    with pytest.raises(ConfigError, match="is not a file"):
        build("text", path=str(tmp_path / "missing.txt"))


def test_diabetes_is_standardized_by_the_train_split() -> None:
    data = build("diabetes")
    assert data.in_shape == (10,) and data.task == "regression"
    assert torch.allclose(data.train.x.mean(0), torch.zeros(10), atol=1e-5)
    assert abs(data.train.y.mean().item()) < 1e-5


def test_augmentation_keeps_shapes_and_does_what_it_says() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 12, 12)
    assert torch.equal(random_crop(x, 0, gen), x)
    cropped = random_crop(x, 2, gen)
    assert cropped.shape == x.shape
    assert torch.equal(hflip(x, 1.0, gen), x.flip(3)) and torch.equal(hflip(x, 0.0, gen), x)
    torch.testing.assert_close(rotate(x, 0.0, gen), x, atol=1e-5, rtol=0)
    # each crop is a shifted copy: some 8x8 interior block of the output matches the input somewhere
    out, src = cropped[0, 0], torch.nn.functional.pad(x[0, 0], (2, 2, 2, 2))
    assert any(torch.equal(out, src[dy:dy + 12, dx:dx + 12]) for dy in range(5) for dx in range(5))
    aug = build_augment(crop_padding=2, flip=True, rotate_degrees=10)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert build_augment() is None


def test_augmentation_keeps_a_channels_last_batch_channels_last() -> None:
    x = torch.randn(8, 3, 12, 12)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    aug = build_augment(crop_padding=2, flip=True, rotate_degrees=10)
    out = aug(nhwc, torch.Generator().manual_seed(1))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(1)))  # same values, only the layout differs
    assert aug(x, torch.Generator().manual_seed(1)).is_contiguous()


def test_mnist_half_a_pair_and_a_missing_official_split_are_named(tmp_path) -> None:
    import shutil

    from dltrain.core.registry import ConfigError

    shutil.copy(MNIST_T10K / "t10k-images-idx3-ubyte.gz", tmp_path)
    with pytest.raises(ConfigError, match="has t10k-images-idx3-ubyte but not t10k-labels-idx1-ubyte"):
        build("mnist", root=str(tmp_path))
    shutil.copy(MNIST_T10K / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(ConfigError, match="use_official_test=true needs both the official train and test files in "
                       f"{tmp_path}: download train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz from "):
        build("mnist", root=str(tmp_path), use_official_test=True)


def test_standardize_uses_train_statistics_per_channel_only() -> None:
    from dltrain.data import standardize

    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 10.0, 100.0])[None, :, None, None]
    train, other = torch.randn(50, 3, 4, 4, generator=gen) * scale + 5, torch.randn(20, 3, 4, 4, generator=gen)
    got_train, got_other = standardize(train, other)
    flat = train.transpose(0, 1).flatten(1)  # (C, everything else)
    mean, std = flat.mean(1)[None, :, None, None], flat.std(1)[None, :, None, None]
    torch.testing.assert_close(got_train, (train - mean) / std)
    torch.testing.assert_close(got_other, (other - mean) / std)  # val/test never feed the statistics
    features = torch.randn(30, 5, generator=gen) * 7 + 3  # (N, F): one statistic per feature
    torch.testing.assert_close(standardize(features)[0], (features - features.mean(0)) / features.std(0))
    constant = standardize(torch.ones(10, 2, 3))[0]
    assert torch.equal(constant, torch.zeros(10, 2, 3))  # a constant channel stays finite


def test_fractions_and_config_keys_are_checked_at_the_door() -> None:
    from dltrain.data import check_fractions

    assert check_fractions([0.6, 0.2, 0.2]) == (0.6, 0.2, 0.2)
    for bad in ([0.6, 0.2], [0.0, 0.5, 0.5], [0.8, 0.3, 0.1], [0.5, -0.1, 0.2]):
        with pytest.raises(ConfigError, match=r"data.fractions=.* must be three"):
            check_fractions(bad)
    with pytest.raises(ConfigError) as err:  # every problem of one node at once, one line each
        DATASETS.parse({"name": "digits", "fractions": "0.6", "bogus": 1, "seed": 3})
    assert len(err.value.problems) == 3 and "data.seed is not an option" in str(err.value)  # seed: trainer.seed
    with pytest.raises(ConfigError, match="unknown data 'cifar100'"):
        DATASETS.parse({"name": "cifar100"})


def test_typed_fields_of_the_bundles() -> None:
    digits = build("digits")
    assert digits.class_names == [str(d) for d in range(10)] and digits.vocab is None
    assert not digits.per_step_targets and digits.chance_mse is None and digits.model_args() == {}
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1078, 359, 360)
    per_channel = digits.train.x.transpose(0, 1).flatten(1)
    assert abs(per_channel.mean().item()) < 1e-5 and abs(per_channel.std().item() - 1) < 1e-4
    assert build("digit_rows").class_names == digits.class_names
    assert build("synthetic", shape=[4], train_size=8, val_size=2, test_size=2).class_names is None


def test_digits_are_read_without_importing_sklearn_and_equal_load_digits() -> None:
    """dltrain reads scikit-learn's digits CSV itself (importing scikit-learn costs ~0.65 s per run process): the
    same arrays, bit for bit, as load_digits; the file is where the fast path looks for it."""
    import importlib.util
    from pathlib import Path

    from sklearn.datasets import load_digits

    from dltrain.data.digits import digit_images

    origin = Path(importlib.util.find_spec("sklearn").origin).parent
    assert (origin / "datasets" / "data" / "digits.csv.gz").is_file()  # the fast path, not the fallback
    images, target = digit_images()
    raw = load_digits()
    assert images.dtype == raw.images.dtype and target.dtype == raw.target.dtype
    assert np.array_equal(images, raw.images) and np.array_equal(target, raw.target)


def test_unreadable_text_is_one_line_with_the_reason(tmp_path) -> None:
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("caf\xe9 au lait ".encode("latin1") * 20)
    with pytest.raises(ConfigError) as err:
        build("text", path=str(corpus), seq_len=4)
    assert "\n" not in str(err.value) and "is not readable UTF-8 text" in str(err.value)
    assert "can't decode byte 0xe9" in str(err.value)


def test_mnist_class_names_and_per_channel_scaling() -> None:
    data = build("mnist", root=str(MNIST_T10K))
    assert data.class_names == [str(d) for d in range(10)] and data.num_outputs == 10
    raw = torch.cat([data.train.x, data.val.x, data.test.x])
    assert raw.shape == (10000, 1, 28, 28) and torch.isfinite(raw).all()


def test_mnist_labels_out_of_range_are_found_at_load_time(tmp_path) -> None:
    """50 labels set to 200 in a copy of the real t10k labels: one line naming the file and the count."""
    import gzip
    import shutil

    from dltrain.core.registry import ConfigError

    for source in MNIST_T10K.glob("*.gz"):
        shutil.copy(source, tmp_path / source.name)
    labels = next(tmp_path.glob("t10k-labels*"))
    raw = bytearray(gzip.decompress(labels.read_bytes()) if labels.suffix == ".gz" else labels.read_bytes())
    raw[8:58] = bytes([200]) * 50  # after the 8-byte IDX header
    labels.write_bytes(gzip.compress(bytes(raw)) if labels.suffix == ".gz" else bytes(raw))
    with pytest.raises(ConfigError, match=r"has 50 label\(s\) outside 0..9 \(e.g. 200\)") as err:
        DATASETS.build(DATASETS.parse({"name": "mnist", "root": str(tmp_path)}), seed=0)
    assert str(labels) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("images", [0, 1])
def test_idx_files_with_too_few_images_are_one_line(tmp_path, images: int) -> None:
    """Zero images was numpy's ValueError traceback; one image leaves no train split at these fractions."""
    from tests.conftest import cli

    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((images, 28, 28)), gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(images), gz=False)
    result = cli(["data=mnist", f"data.root={tmp_path}", "data.fractions=[0.4,0.3,0.3]", "trainer.max_epochs=1"],
                 cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    expected = (f"dltrain: error: data=mnist: {tmp_path / 't10k-images-idx3-ubyte'} holds no images (its header "
                "counts 0); replace it with the original file, or remove the pair" if images == 0 else
                "dltrain: error: data=mnist: 1 image(s) in all, too few for a train split of "
                "data.fractions=[0.4, 0.3, 0.3]; give the data set's files with their images")
    assert result.stderr.strip() == expected
