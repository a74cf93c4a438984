"""Data from the user's files: csv, arrays (.npz, memory-mapped .npy), image_folder (PNGs), imdb (aclImdb layout).

Each fixture writes small real files whose labels depend on the content; each format trains a real model that
must beat the best constant prediction (majority class of the test split, or the train mean) by a stated
margin, and the same files with the labels permuted (the fixture's control) must not. Broken inputs are one
ConfigError line naming the file (and line or sample), with nothing written.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from dltrain.core.registry import ConfigError
from dltrain.data import DATASETS
from dltrain.data.mapped import MappedRows
from tests.conftest import parse, run

QUICK = ["trainer.log_every_n_steps=0", "trainer.ckpt.save_last=false", "trainer.ckpt.save_best=false",
         "optim=adam"]
MARGIN = 0.25  # accuracy points above the majority-class share of the test split


def build(name: str, seed: int = 0, **kwargs):
    return DATASETS.build(DATASETS.parse({"name": name, **kwargs}), seed=seed)


def one_line(err: pytest.ExceptionInfo) -> str:
    assert len(err.value.problems) == 1 and "\n" not in str(err.value), err.value.problems
    return str(err.value)


def majority_share(overrides: list[str]) -> float:
    """The accuracy of the best constant guess on the test split the run will use."""
    from dltrain.run.assemble import build as build_parts

    y = build_parts(parse(overrides)).data.test.y.tolist()
    return Counter(y).most_common(1)[0][1] / len(y)


def check_learns(overrides: list[str], control: list[str], tmp_path: Path) -> dict[str, float]:
    """The real labels beat the majority share by MARGIN; permuted labels do not."""
    base = majority_share(overrides)
    real = run(overrides, tmp_path / "real")["test"]["test/acc"]
    shuffled = run(control, tmp_path / "control")["test"]["test/acc"]
    print(f"\n{overrides[0]}: test acc {real:.3f}, shuffled-label control {shuffled:.3f}, majority {base:.3f}")
    assert real >= base + MARGIN, (real, base)
    assert shuffled < base + MARGIN, (shuffled, base)
    return {"real": real, "control": shuffled, "base": base}


# --- csv ----------------------------------------------------------------------------------------------------
def write_table(path: Path, n: int = 450, seed: int = 0, permute: bool = False, hole: bool = True) -> Path:
    """Columns a, b (numbers), color (text), id (text, unique), label (low/mid/high from 1.5a - b + color)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], n)
    score = 1.5 * a - b + np.select([color == "red", color == "blue"], [1.5, -1.5], 0.0)
    label = np.where(score > 0.7, "high", np.where(score < -0.7, "low", "mid"))
    if permute:
        label = rng.permutation(label)
    lines = ["id,a,b,color,label"]
    for i in range(n):
        b_text = "" if hole and i == 3 else f"{b[i]:.4f}"  # one missing value, on line 5
        lines.append(f"r{i},{a[i]:.4f},{b_text},{color[i]},{label[i]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_reads_numeric_and_categorical_columns(tmp_path) -> None:
    table = write_table(tmp_path / "t.csv")
    with pytest.raises(ConfigError) as err:
        build("csv", path=str(table), target="label", drop=["id"])
    assert one_line(err).startswith(f"{table}, line 5, column 'b': missing value")
    data = build("csv", path=str(table), target="label", drop=["id"], missing="mean")
    assert data.task == "classification" and data.class_names == ["high", "low", "mid"] and data.num_outputs == 3
    assert data.in_shape == (5,)  # a, b standardized, then color one-hot (blue, green, red)
    assert (len(data.train), len(data.val), len(data.test)) == (270, 90, 90)
    assert torch.allclose(data.train.x[:, :2].mean(0), torch.zeros(2), atol=1e-5)
    onehot = torch.cat([data.train.x, data.val.x, data.test.x])[:, 2:]
    assert torch.equal(onehot.sum(1), torch.ones(450)) and set(onehot.unique().tolist()) == {0.0, 1.0}
    dropped = build("csv", path=str(table), target="label", drop=["id"], missing="drop")
    assert len(dropped.train) + len(dropped.val) + len(dropped.test) == 449
    with pytest.raises(ConfigError) as err:  # an id column would be 270 one-hot columns
        build("csv", path=str(table), target="label", missing="mean")
    assert "column 'id' has 270 distinct text values" in one_line(err) and "data.drop" in str(err.value)
    # the task follows the target: a float column is regression, an override makes a number a class
    reg = build("csv", path=str(table), target="a", drop=["id", "label"], missing="drop")
    assert reg.task == "regression" and reg.num_outputs == 1 and reg.class_names is None
    assert abs(reg.train.y.mean().item()) < 1e-5 and reg.chance_mse == pytest.approx(1.0, abs=0.01)


def test_csv_unseen_categories_and_separate_test_file(tmp_path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("x,kind,y\n1,a,0\n2,b,1\n3,a,0\n4,b,1\n5,a,0\n6,b,1\n")
    test = tmp_path / "test.csv"
    test.write_text("kind,y,x\nc,1,7\na,0,8\n")  # columns in another order; category c never seen in train
    data = build("csv", path=str(train), test_path=str(test), target="y", fractions=[0.5, 0.5, 0.0])
    assert (len(data.train), len(data.val), len(data.test)) == (3, 3, 2)
    assert data.class_names == ["0", "1"] and data.test.y.tolist() == [1, 0]
    assert data.test.x[0, 1:].tolist() == [0.0, 0.0] and data.test.x[1, 1:].sum() == 1.0  # unseen: all zeros
    codes = build("csv", path=str(train), target="y", categorical=["x"], fractions=[1.0, 0.0, 0.0])
    assert codes.in_shape == (8,)  # x as six codes, kind as two
    assert build("csv", path=str(train), target="y", task="regression").task == "regression"


def test_csv_broken_files_are_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,2,0\n3,4\n5,6,1\n")
    with pytest.raises(ConfigError) as err:
        build("csv", path=str(bad), target="y")
    assert one_line(err) == f"{bad}, line 3: 2 fields, but the header has 3 (','-separated)"
    bad.write_text("a,b,y\n1,inf,0\n3,4,1\n5,-1e39,1\n")  # -1e39: a float64, -inf as the inputs' float32
    with pytest.raises(ConfigError) as err:
        build("csv", path=str(bad), target="y")
    assert one_line(err) == (f"{bad}: 2 infinite value(s) (first at {bad}, line 2, column 'b'); replace them (by "
                             "numbers within float32's ±3.4e38) or leave the cells empty")
    with pytest.raises(ConfigError) as err:
        build("csv", path=str(bad), target="z")
    assert one_line(err) == f"data.target=z is not a column of {bad}; columns: a, b, y"
    with pytest.raises(ConfigError) as err:
        build("csv", path=str(tmp_path / "nope.csv"), target="y")
    assert "nope.csv is not a file" in one_line(err)
    bad.write_bytes(b"a,y\n1,\xff\xfe\n")
    with pytest.raises(ConfigError) as err:
        build("csv", path=str(bad), target="y")
    assert one_line(err).startswith(f"{bad} is not UTF-8 text")
    bad.write_text("a,y\n1,0\n2,\n3,1\n")
    with pytest.raises(ConfigError) as err:
        build("csv", path=str(bad), target="y", missing="mean")
    assert one_line(err).startswith(f"{bad}, line 3, column 'y': the target is missing")


@pytest.mark.slow
def test_csv_trains_past_the_majority_class(tmp_path) -> None:
    common = ["data=csv", "data.target=label", "data.drop=[id]", "data.missing=mean", "model=mlp", "model.hidden=[32]",
              "optim.lr=0.01", "trainer.max_epochs=30", *QUICK]
    real = [*common, f"data.path={write_table(tmp_path / 'real.csv')}"]
    control = [*common, f"data.path={write_table(tmp_path / 'shuffled.csv', permute=True)}"]
    check_learns(real, control, tmp_path)


@pytest.mark.slow
def test_csv_regression_beats_the_mean(tmp_path) -> None:
    from dltrain.run.assemble import build as build_parts

    table = write_table(tmp_path / "t.csv", hole=False)
    overrides = ["data=csv", f"data.path={table}", "data.target=a", "data.drop=[id]", "model=mlp", "model.hidden=[32]",
                 "optim.lr=0.01", "trainer.max_epochs=30", *QUICK]
    test_y = build_parts(parse(overrides)).data.test.y
    baseline = float((test_y ** 2).mean())  # predicting the train mean, which is 0 once the target is scaled
    mse = run(overrides, tmp_path / "run")["test"]["test/mse"]
    # a = (score + b - color) / 1.5 comes back from label, b and color only coarsely
    print(f"\ncsv regression: test mse {mse:.3f}, train-mean baseline {baseline:.3f}")
    assert mse < baseline - 0.4, (mse, baseline)


# --- arrays -------------------------------------------------------------------------------------------------
def teacher_data(n: int, shape: tuple[int, ...], seed: int = 0, permute: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs labelled by a fixed linear teacher (3 classes)."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, *shape)) * 2 + 5).astype(np.float32)
    w = rng.normal(size=(int(np.prod(shape)), 3))
    y = ((x.reshape(n, -1) - 5) @ w).argmax(1).astype(np.int64)
    return x, rng.permutation(y) if permute else y


def test_arrays_npz_and_mapped_npy_give_the_same_splits(tmp_path) -> None:
    x, y = teacher_data(300, (2, 4, 4))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    small = build("arrays", path=str(tmp_path / "d.npz"))
    mapped = build("arrays", path=str(tmp_path / "x.npy"), y_path=str(tmp_path / "y.npy"), mmap_threshold_mb=0.01)
    assert isinstance(small.train.x, torch.Tensor) and isinstance(mapped.train.x, MappedRows)
    assert isinstance(mapped.train.x.array, np.memmap) and mapped.train.x.array.filename is not None
    assert mapped.in_shape == small.in_shape == (2, 4, 4) and mapped.task == "classification"
    for part in ("train", "val", "test"):
        a, b = getattr(small, part), getattr(mapped, part)
        assert len(a) == len(b) and torch.equal(a.y, b.y)
        torch.testing.assert_close(b.x[torch.arange(len(b))], a.x, atol=1e-5, rtol=1e-5)
    idx = torch.tensor([7, 2, 7, 0])  # any order, repeats included
    torch.testing.assert_close(mapped.train.x[idx], small.train.x[idx], atol=1e-5, rtol=1e-5)
    assert mapped.train.x[:3].shape == (3, 2, 4, 4) and len(mapped.train.x.to("cpu")) == len(small.train)
    # Keras' layout: per-split arrays in one .npz; val comes out of train by fractions
    np.savez(tmp_path / "k.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    keras = build("arrays", path=str(tmp_path / "k.npz"))
    assert (len(keras.train), len(keras.val), len(keras.test)) == (150, 50, 100)
    assert torch.equal(keras.test.y, torch.from_numpy(y[200:]))
    reg = build("arrays", path=str(tmp_path / "d.npz"), y_key="x", standardize_target=False, x_key="x")
    assert reg.task == "regression" and reg.num_outputs == 32  # float targets (N, 2, 4, 4): 32 outputs


def declaring(path: Path, size: int, **arrays: np.ndarray) -> Path:
    """An .npz of `arrays` whose zip central directory declares each member `size` bytes once inflated, as a zip
    bomb's does (the data is the arrays' own: numpy would read them, and never get to the declared end)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
            archive.getinfo(f"{name}.npy").file_size = size  # written to the central directory as the zip closes
    return path


def test_arrays_broken_files_are_one_line(tmp_path) -> None:
    x, y = teacher_data(50, (4,))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y[:40])
    with pytest.raises(ConfigError) as err:
        build("arrays", path=str(tmp_path / "x.npy"), y_path=str(tmp_path / "y.npy"))
    assert "x.npy has 50 input sample(s) (50, 4) but" in one_line(err) and "y.npy has 40 target(s)" in str(err.value)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError) as err:
        build("arrays", path=str(tmp_path / "objects.npy"), y_path=str(tmp_path / "y.npy"))
    assert one_line(err).startswith(f"{tmp_path / 'objects.npy'} holds Python objects")
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    for threshold in (1024.0, 0.0):  # read, or memory-mapped
        with pytest.raises(ConfigError) as err:
            build("arrays", path=str(tmp_path / "cut.npy"), y_path=str(tmp_path / "y.npy"), mmap_threshold_mb=threshold)
        assert one_line(err).startswith(f"{tmp_path / 'cut.npy'} is not a valid .npy file or is truncated")
    x[3, 1] = np.nan
    x[9, 0] = np.inf
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    for threshold in (1024.0, 0.0):
        with pytest.raises(ConfigError) as err:
            build("arrays", path=str(tmp_path / "x.npy"), y_path=str(tmp_path / "y.npy"), mmap_threshold_mb=threshold)
        assert one_line(err) == f"{tmp_path / 'x.npy'}: 2 NaN/inf value(s) in the inputs; clean or drop those samples"
    np.savez(tmp_path / "d.npz", inputs=x, y=y)
    with pytest.raises(ConfigError) as err:
        build("arrays", path=str(tmp_path / "d.npz"))
    assert one_line(err).startswith(f"{tmp_path / 'd.npz'} has no array 'x'; it holds inputs, y")
    x64 = x.astype(np.float64)
    x64[3, 1] = 1e39  # finite as float64, inf once the inputs are float32
    x64[9, 0] = 2.0
    np.savez(tmp_path / "wide.npz", x=x64, y=y)
    with pytest.raises(ConfigError) as err:
        build("arrays", path=str(tmp_path / "wide.npz"))
    assert one_line(err) == (f"{tmp_path / 'wide.npz'}: 1 NaN/inf value(s) in the inputs; clean or drop those samples "
                             "(float32, the type they are trained in, holds at most ±3.4e38)")
    declaring(tmp_path / "bomb.npz", 2**50, x=x[:, :2], y=y)  # what a zip bomb's directory says: 1 PiB inflated
    with pytest.raises(ConfigError) as err:
        build("arrays", path=str(tmp_path / "bomb.npz"))
    assert one_line(err).startswith(f"{tmp_path / 'bomb.npz'}: its array 'x' inflates to 1,073,741,824 MiB (0.00 "
                                    "MiB on disk), more than the ")
    assert one_line(err).endswith("MiB of memory available; numpy reads an .npz member whole: save large inputs as "
                                  ".npy, memory-mapped above data.mmap_threshold_mb")
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError) as err:
        build("arrays", path=str(tmp_path / "zip.npz"))
    assert "zip.npz is not a valid .npz file" in one_line(err)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["npz", "mapped_npy"])
def test_arrays_train_past_the_majority_class(tmp_path, layout: str) -> None:
    def files(name: str, permute: bool) -> list[str]:
        x, y = teacher_data(600, (1, 6, 6), permute=permute)
        if layout == "npz":
            np.savez(tmp_path / f"{name}.npz", x=x, y=y)
            return [f"data.path={tmp_path / name}.npz"]
        np.save(tmp_path / f"{name}_x.npy", x)
        np.save(tmp_path / f"{name}_y.npy", y)
        assert (tmp_path / f"{name}_x.npy").stat().st_size > 0.05 * 2**20  # above the threshold below
        return [f"data.path={tmp_path / name}_x.npy", f"data.y_path={tmp_path / name}_y.npy",
                "data.mmap_threshold_mb=0.05"]

    common = ["data=arrays", "model=mlp", "model.hidden=[32]", "optim.lr=0.01", "trainer.max_epochs=20", *QUICK]
    result = check_learns([*common, *files("real", False)], [*common, *files("shuffled", True)], tmp_path)
    assert result["real"] > 0.8


# --- image_folder -------------------------------------------------------------------------------------------
def write_images(root: Path, per_class: int = 60, seed: int = 0, permute: bool = False) -> Path:
    """PNGs of 16x16 (RGB, random colors and noise): a horizontal bar, a vertical bar or a square, anywhere."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    shapes = [rng.permutation(np.repeat(np.arange(3), per_class)) if permute else np.repeat(np.arange(3), per_class)]
    for i, (shape, folder) in enumerate(zip(shapes[0], np.repeat(np.array(["bars", "columns", "squares"]), per_class))):
        image = rng.integers(0, 60, (16, 16, 3))
        color = rng.integers(150, 256, 3)
        r, c = rng.integers(2, 12, 2)
        if shape == 0:
            image[r:r + 2, 1:15] = color
        elif shape == 1:
            image[1:15, c:c + 2] = color
        else:
            image[r:r + 4, c:c + 4] = color
        (root / str(folder)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(root / str(folder) / f"img{i:04d}.png")
    (root / "bars" / "notes.txt").write_text("not an image: skipped")
    return root


def test_image_folder_decodes_once_and_rebuilds_when_the_folder_changes(tmp_path, monkeypatch) -> None:
    import dltrain.data.image_folder as image_folder

    root = write_images(tmp_path / "imgs", per_class=10)
    data = build("image_folder", root=str(root), size=[12, 10], channels=1, fractions=[0.6, 0.2, 0.2])
    assert data.class_names == ["bars", "columns", "squares"] and data.in_shape == (1, 12, 10)
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 6)
    caches = list((root / ".dltrain_cache").glob("*.npz"))
    assert len(caches) == 1
    decoded = []
    real_decode = image_folder.decode
    monkeypatch.setattr(image_folder, "decode", lambda *a: decoded.append(1) or real_decode(*a))
    again = build("image_folder", root=str(root), size=[12, 10], channels=1, fractions=[0.6, 0.2, 0.2])
    assert not decoded and torch.equal(again.test.x, data.test.x)  # from the cache
    with np.load(caches[0]) as archive:
        pixels = archive["pixels"]
    declaring(caches[0], 2**40, pixels=pixels)  # a cache that would inflate beyond its pixels: a bomb, not read
    bombed = build("image_folder", root=str(root), size=[12, 10], channels=1, fractions=[0.6, 0.2, 0.2])
    assert decoded == [1] and torch.equal(bombed.test.x, data.test.x)  # decoded afresh, and the cache rewritten
    decoded.clear()
    (root / "squares" / "img0020.png").unlink()
    changed = build("image_folder", root=str(root), size=[12, 10], channels=1, fractions=[0.6, 0.2, 0.2])
    assert decoded == [1] and len(changed.train) + len(changed.val) + len(changed.test) == 29
    assert len(list((root / ".dltrain_cache").glob("*.npz"))) == 1  # the stale cache went
    rgb = build("image_folder", root=str(root), size=[8, 8], channels=3, cache_dir=str(tmp_path / "cache"))
    assert rgb.in_shape == (3, 8, 8) and len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_image_folder_broken_files_are_one_line_and_write_nothing(tmp_path) -> None:
    from PIL import Image

    root = write_images(tmp_path / "imgs", per_class=4)
    (root / "columns" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ConfigError) as err:
        build("image_folder", root=str(root))
    assert one_line(err).startswith(f"{root / 'columns' / 'broken.png'} is not a readable image")
    assert not (root / ".dltrain_cache").exists()
    (root / "columns" / "broken.png").unlink()
    Image.new("1", (12000, 12000)).save(root / "bars" / "bomb.png")  # 18 KB, 144 megapixels
    with pytest.raises(ConfigError) as err:
        build("image_folder", root=str(root))
    assert one_line(err) == (f"{root / 'bars' / 'bomb.png'}: Image size (144000000 pixels) exceeds limit of 89478485 "
                             "pixels, could be decompression bomb DOS attack; resize it to at most 89,478,485 pixels "
                             "(PIL.Image.MAX_IMAGE_PIXELS)")
    assert not (root / ".dltrain_cache").exists()
    for f in (root / "squares").iterdir():
        f.unlink()
    with pytest.raises(ConfigError) as err:
        build("image_folder", root=str(root))
    assert one_line(err).startswith(f"data=image_folder: {root / 'squares'} has no images")
    with pytest.raises(ConfigError) as err:
        build("image_folder", root=str(tmp_path / "nowhere"))
    assert "is not a folder" in one_line(err)


@pytest.mark.slow
def test_image_folder_trains_a_cnn_past_the_majority_class(tmp_path) -> None:
    common = ["data=image_folder", "data.size=[12,12]", "data.fractions=[0.6,0.2,0.2]", "+data.augment.flip=true",
              "model=cnn", "model.channels=[8,16]", "model.head=[32]", "optim.lr=0.005", "trainer.max_epochs=15",
              *QUICK]
    real = [*common, f"data.root={write_images(tmp_path / 'real')}"]
    control = [*common, f"data.root={write_images(tmp_path / 'shuffled', permute=True)}"]
    check_learns(real, control, tmp_path)


# --- imdb ---------------------------------------------------------------------------------------------------
FILLER = ("the movie was a film with some actors and scenes that i watched on friday it has plot music and "
          "a story about people in a city").split()
CUES = {"pos": ["great", "wonderful", "loved", "excellent"], "neg": ["awful", "boring", "hated", "terrible"]}


def write_reviews(root: Path, train: int = 150, test: int = 50, seed: int = 0, permute: bool = False) -> Path:
    """aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt: filler words plus two or three words of the class's
    sentiment, `<br />` tags, punctuation and capitals; unsup/ holds a file that is not even UTF-8."""
    rng = np.random.default_rng(seed)
    top = root / "aclImdb"
    for part, count in (("train", train), ("test", test)):
        labels = np.repeat(np.array(["pos", "neg"]), count)
        folders = rng.permutation(labels) if permute else labels
        for i, (label, folder) in enumerate(zip(labels, folders)):
            words = list(rng.choice(FILLER, rng.integers(15, 40)))
            for _ in range(rng.integers(2, 4)):
                words.insert(rng.integers(0, len(words) + 1), str(rng.choice(CUES[label])).upper())
            text = " ".join(words[:8]) + ".<br /><br />" + " ".join(words[8:]) + "!"
            (top / part / folder).mkdir(parents=True, exist_ok=True)
            (top / part / folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(text)
    (top / "unsup").mkdir(exist_ok=True)
    (top / "unsup" / "0_0.txt").write_bytes(b"\xff\xfe not utf-8")
    return root


def test_imdb_tokens_vocabulary_and_padding(tmp_path) -> None:
    from dltrain.data.imdb import tokenize

    assert tokenize("A <br />GREAT film,<br/>isn't it?") == ["a", "great", "film", "isn't", "it"]
    root = write_reviews(tmp_path, train=40, test=10)
    data = build("imdb", root=str(root), seq_len=50, vocab_size=30, min_count=2)
    assert data.vocab[:2] == ["<pad>", "<unk>"] and len(data.vocab) == 30 and data.num_outputs == 2
    assert data.class_names == ["neg", "pos"] and not data.per_step_targets
    assert data.model_args() == {"vocab_size": 30, "per_step": False}
    assert (len(data.train), len(data.val), len(data.test)) == (71, 9, 20) and data.in_shape == (50,)
    short = data.train.x[0]
    assert short[0] == 0 and short[-1] != 0  # padded at the front, the last word last
    assert data.train.x.max() < 30 and (data.train.x == 1).any()  # rare words: unknown
    cut = build("imdb", root=str(root / "aclImdb"), seq_len=5, vocab_size=1000, min_count=1)
    assert cut.in_shape == (5,) and (cut.train.x != 0).all()  # every review is longer than 5 words: no padding
    full = build("imdb", root=str(root), seq_len=50, vocab_size=1000, min_count=1)
    assert set(full.vocab) - {"<pad>", "<unk>"} <= set(FILLER) | {w for ws in CUES.values() for w in ws}


def test_imdb_broken_layout_and_files_are_one_line(tmp_path) -> None:
    root = write_reviews(tmp_path, train=3, test=2)
    (root / "aclImdb" / "train" / "neg" / "1_2.txt").write_bytes(b"bad \xff byte")
    with pytest.raises(ConfigError) as err:
        build("imdb", root=str(root))
    assert one_line(err).startswith(f"{root / 'aclImdb' / 'train' / 'neg' / '1_2.txt'} is not UTF-8 text")
    import shutil

    shutil.rmtree(root / "aclImdb" / "train" / "neg")
    with pytest.raises(ConfigError) as err:
        build("imdb", root=str(root))
    assert "train/neg is missing" in one_line(err)
    with pytest.raises(ConfigError) as err:
        build("imdb", root=str(tmp_path / "elsewhere"))
    assert "holds no aclImdb layout" in one_line(err)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm"])
def test_imdb_trains_a_recurrent_classifier_past_the_majority_class(tmp_path, model: str) -> None:
    common = ["data=imdb", "data.seq_len=40", "data.vocab_size=200", "data.batch_size=32", f"model={model}",
              "model.hidden_size=16", "model.embed_dim=16", "optim.lr=0.01", "reg.grad_clip=1.0",
              "trainer.max_epochs=10", *QUICK]
    real = [*common, f"data.root={write_reviews(tmp_path / 'real', train=100, test=40)}"]
    control = [*common, f"data.root={write_reviews(tmp_path / 'shuffled', train=100, test=40, permute=True)}"]
    check_learns(real, control, tmp_path)


def test_imdb_experiment_builds_with_the_users_root(tmp_path) -> None:
    from dltrain.run.assemble import build as build_parts

    root = write_reviews(tmp_path, train=10, test=4)
    parts = build_parts(parse(["experiment=imdb_rnn_vs_lstm", f"data.root={root}", "data.batch_size=8"]))
    assert parts.data.vocab is not None and type(parts.model).__name__ == "SequenceNet"
    with pytest.raises(ConfigError, match="holds no aclImdb layout"):
        build_parts(parse(["experiment=imdb_rnn_vs_lstm", f"data.root={tmp_path / 'none'}"]))


@pytest.mark.slow
def test_a_broken_file_stops_the_cli_with_one_line_and_exit_2(tmp_path) -> None:
    from tests.conftest import cli

    bad = tmp_path / "bad.csv"
    bad.write_text("a,y\n1,0\n2\n")
    started = time.perf_counter()
    proc = cli(["data=csv", f"data.path={bad}", "data.target=y", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"dltrain: error: {bad}, line 3: 1 fields, but the header has 2 (','-separated)"
    assert not (tmp_path / "run" / "metrics.json").exists() and time.perf_counter() - started < 120


@pytest.mark.slow
def test_the_memory_map_benchmark_runs(tmp_path) -> None:
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "bench.json"
    # the limit: 56 MiB above the process's start, under the 64 MiB file (in memory it cannot fit), with room for a
    # few 8 MiB batches of the mapped run (48 left it one batch short in a fresh clone, 2026-12-07)
    args = ["--size-mb", "64", "--limit-mb", "56", "--features", "4096", "--epochs", "1", "--repeats", "1",
            "--skip-cold", "--dir", str(tmp_path), "--json", str(out)]
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "arrays_mmap.py"), *args], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = {r["mode"]: r for r in json.loads(out.read_text())["results"]}
    limited = results["in_memory_limited"]
    assert limited["status"] == "failed" and "does not fit" in limited["error"]
    assert results["mapped"]["status"] == results["in_memory"]["status"] == "trained"
    # the same batches: the same model up to float rounding (train statistics summed in float64 vs float32)
    assert abs(results["mapped"]["val_acc"] - results["in_memory"]["val_acc"]) < 0.01
