"""How the splits are drawn: the default seeded split (unchanged, bit for bit), the opt-in stratified split
(`data.stratify=true`: each class's share within one sample), and image folders with their own train/, val/,
test/ folders or `data.val_root` / `data.test_root`. Images are tiny PNGs written with Pillow in tmp_path."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from dltrain.core.registry import ConfigError
from dltrain.data import split_indices
from dltrain.data.images import bundle
from tests.conftest import REPO, cli, parse
from tests.data.test_files import build, one_line, write_images, write_reviews

IRIS = REPO / "examples" / "iris.csv"


def fingerprint(data) -> str:
    """A hash of the three splits' targets, in order: any change of which sample lands where changes it."""
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        digest.update(np.ascontiguousarray(split.y.numpy()).tobytes() + b"|")
    return digest.hexdigest()[:16]


def small_sets(tmp_path: Path, **options) -> dict:
    """One bundle of each kind whose split is drawn by fractions, built with `options` (e.g. stratify=True)."""
    rng = np.random.default_rng(0)
    tmp_path.mkdir(exist_ok=True)
    np.savez(tmp_path / "a.npz", x=rng.normal(size=(300, 4)).astype(np.float32), y=rng.integers(0, 3, 300))
    parts = {"train": (rng.integers(0, 256, (200, 6, 6), dtype=np.uint8), rng.integers(0, 10, 200))}
    images = write_images(tmp_path / "imgs", per_class=10)
    reviews = write_reviews(tmp_path / "rev", train=20, test=5)
    return {
        "digits": build("digits", **options),
        "digit_rows": build("digit_rows", seed=1, **options),
        "csv": build("csv", path=str(IRIS), target="species", **options),
        "arrays": build("arrays", path=str(tmp_path / "a.npz"), **options),
        "mnist_bundle": bundle(parts, [0.8, 0.1, 0.1], 0, False, stratify=options.get("stratify", False)),
        "image_folder": build("image_folder", root=str(images), size=[8, 8], fractions=[0.6, 0.2, 0.2], **options),
        "imdb": build("imdb", root=str(reviews), seq_len=10, vocab_size=30, use_official_test=False, **options),
    }


# written by the code before data.stratify existed (commit b9edb97): the default split must not move
BEFORE = {"digits": "865a5fc577547179", "digit_rows": "a484a3b83823e9c1", "csv": "13f66ac48e822148",
          "arrays": "7b860ad7ac39dac3", "mnist_bundle": "9b3c0fbc8094cc52", "image_folder": "ff799af6d1afece6",
          "imdb": "07c350c1583e9ebe"}


def test_the_default_split_is_bit_identical_to_before(tmp_path) -> None:
    indices = torch.cat(split_indices(1000, (0.6, 0.2, 0.2), 3)).numpy().tobytes()
    assert hashlib.sha256(indices).hexdigest()[:16] == "f0818b66bc03445e"
    assert {name: fingerprint(data) for name, data in small_sets(tmp_path).items()} == BEFORE
    assert {name: fingerprint(data) for name, data in small_sets(tmp_path, stratify=False).items()} == BEFORE


def shares_within_one(data, fractions: tuple[float, float, float]) -> int:
    """The largest |count of class c in split s - fraction_s * count of c| over classes and splits."""
    ys = [split.y.reshape(-1).tolist() for split in (data.train, data.val, data.test)]
    total = Counter(y for part in ys for y in part)
    return max(abs(Counter(part)[c] - f * n) for part, f in zip(ys, fractions) for c, n in total.items())


def test_stratified_splits_give_each_class_its_share_within_one_sample(tmp_path) -> None:
    fractions = {"digits": (0.6, 0.2, 0.2), "digit_rows": (0.6, 0.2, 0.2), "csv": (0.6, 0.2, 0.2),
                 "arrays": (0.6, 0.2, 0.2), "mnist_bundle": (0.8, 0.1, 0.1), "image_folder": (0.6, 0.2, 0.2),
                 "imdb": (0.8, 0.1, 0.1)}
    plain, stratified = small_sets(tmp_path / "plain"), small_sets(tmp_path / "stratified", stratify=True)
    for name, data in stratified.items():
        assert shares_within_one(data, fractions[name]) <= 1, name
        assert sum(map(len, (data.train, data.val, data.test))) == sum(map(len, (plain[name].train, plain[name].val,
                                                                                 plain[name].test))), name
    assert max(shares_within_one(plain[n], fractions[n]) for n in plain) > 3  # what the option changes


@pytest.mark.parametrize("fractions", [(0.6, 0.2, 0.2), (0.5, 0.1, 0.2), (0.7, 0.3, 0.0)])
def test_split_indices_per_class_is_a_seeded_partition(fractions) -> None:
    labels = torch.tensor([0] * 50 + [1] * 7 + [2] * 3 + [3] * 140)
    train, val, test = split_indices(len(labels), fractions, 5, labels)
    drawn = torch.cat([train, val, test])
    assert len(set(drawn.tolist())) == len(drawn)  # no sample twice
    if sum(fractions) == 1.0:
        assert sorted(drawn.tolist()) == list(range(len(labels)))
    for part, f in zip((train, val, test), fractions):
        counts = torch.bincount(labels[part], minlength=4)
        assert (counts - f * torch.bincount(labels)).abs().max() <= 1, (part, f)
    again = split_indices(len(labels), fractions, 5, labels)
    assert all(torch.equal(a, b) for a, b in zip(again, (train, val, test)))
    assert not torch.equal(split_indices(len(labels), fractions, 6, labels)[0], train)
    assert labels[train[:20]].unique().numel() > 1  # the classes are mixed, not in blocks


def test_stratify_is_a_data_option_and_refuses_a_regression_target(tmp_path) -> None:
    from dltrain.run.assemble import build as build_parts

    data = build_parts(parse(["data=csv", f"data.path={IRIS}", "data.target=species", "data.stratify=true"])).data
    assert shares_within_one(data, (0.6, 0.2, 0.2)) <= 1
    digits = build_parts(parse(["data=digits", "data.stratify=true"])).data
    assert shares_within_one(digits, (0.6, 0.2, 0.2)) <= 1
    with pytest.raises(ConfigError) as err:
        build("csv", path=str(IRIS), target="petal_width_cm", stratify=True)
    assert one_line(err).startswith("data.stratify=true splits each class on its own, but data.task=auto takes "
                                    "target column 'petal_width_cm' as regression targets")
    with pytest.raises(ConfigError) as err:
        parse(["data=digits", "data.stratify=maybe"])
    assert "data.stratify='maybe'" in str(err.value)


# --- image folders with their own splits ----------------------------------------------------------------
def split_root(root: Path, val: bool = True) -> Path:
    """root/train (8 per class), root/val (2 per class), root/test (3 per class): 16x16 PNGs, 3 classes."""
    write_images(root / "train", per_class=8)
    if val:
        write_images(root / "val", per_class=2, seed=1)
    write_images(root / "test", per_class=3, seed=2)
    return root


def raw_pixels(data, split) -> torch.Tensor:
    """The split's images as 0..255 values again (undoing the saved standardisation)."""
    prep = data.preprocessing
    mean, std = (torch.tensor(prep[k]).reshape(-1, 1, 1) for k in ("mean", "std"))
    return (split.x * std + mean) * 255


def test_image_folder_takes_train_val_test_folders(tmp_path) -> None:
    from dltrain.data.image_folder import decode, scan

    root = split_root(tmp_path / "imgs")
    data = build("image_folder", root=str(root), size=[8, 8])
    assert data.class_names == ["bars", "columns", "squares"]
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 9)
    _, files, labels = scan(root / "test")
    assert data.test.y.tolist() == labels  # the test folder as it is, in order
    torch.testing.assert_close(raw_pixels(data, data.test), torch.from_numpy(decode(files, (8, 8), 3)).float(),
                               atol=1e-3, rtol=0)
    named = build("image_folder", root=str(root / "train"), val_root=str(root / "val"),
                  test_root=str(root / "test"), size=[8, 8])
    assert all(torch.equal(a.x, b.x) for a, b in zip((data.train, data.val, data.test),
                                                      (named.train, named.val, named.test)))
    other = write_images(tmp_path / "other", per_class=1, seed=3)
    assert len(build("image_folder", root=str(root), test_root=str(other), size=[8, 8]).test) == 3  # named wins


def test_image_folder_without_val_folder_draws_val_from_train(tmp_path) -> None:
    root = split_root(tmp_path / "imgs", val=False)
    data = build("image_folder", root=str(root), size=[8, 8], fractions=[0.75, 0.25, 0.0], stratify=True)
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 9)  # train/ by 0.75 : 0.25, test/ as is
    assert torch.bincount(data.val.y).tolist() == [2, 2, 2]
    (root / "valid").mkdir()
    write_images(root / "valid", per_class=1, seed=4)
    assert len(build("image_folder", root=str(root), size=[8, 8]).val) == 3  # valid/ is the val folder too


def test_image_folder_splits_with_other_classes_are_one_line(tmp_path) -> None:
    root = split_root(tmp_path / "imgs")
    write_images(tmp_path / "more", per_class=1, seed=5)
    (tmp_path / "more" / "columns").rename(root / "test" / "circles")
    result = cli(["data=image_folder", f"data.root={root}", "data.size=[8,8]", "model=mlp", "trainer.max_epochs=1",
                  f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"dltrain: error: data=image_folder: the test folder {root / 'test'} has class "
                                    "folder(s) the train split lacks: circles; its classes must be among the train "
                                    "split's (bars, columns, squares)"), result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
    (root / "test").rename(tmp_path / "test")
    (root / "train").rename(tmp_path / "train")
    with pytest.raises(ConfigError) as err:
        build("image_folder", root=str(root))
    assert one_line(err) == (f"data=image_folder: {root} holds val/ but no train/ folder; add "
                             "root/train/<class>/<image> (val/ and test/ are optional)")
    (tmp_path / "train").rename(root / "train")
    (root / "valid").mkdir()
    with pytest.raises(ConfigError) as err:
        build("image_folder", root=str(root))
    assert one_line(err) == f"data=image_folder: {root} has val/ and valid/; keep one validation folder"
