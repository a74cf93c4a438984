"""What a trained model needs travels with it: `dltrain predict` on raw files (CSV rows, PNGs, text files, .npy),
`dltrain eval --predictions` on the run's test split and the exported TorchScript model on raw inputs (built from
the JSON written beside it, as a user of the export would) all give the same predictions. Bad input is one line
and exit code 2. Each test trains a tiny real run (a few epochs on a few hundred samples).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import cli, run
from tests.data.test_files import write_images, write_reviews

QUICK = ["trainer.log_every_n_steps=0", "optim=adam", "trainer.max_epochs=3"]


def command(args: list[str]) -> tuple[int, str, str]:
    """A sub-command run in this process (the installed `dltrain` would pay torch's import again)."""
    from typer.testing import CliRunner

    from dltrain.cli.commands import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def one_error(code: int, err: str) -> str:
    assert code == 2 and err.count("\n") == 1 and err.startswith("dltrain: error: "), (code, err)
    return err.strip()


def refused(args: list[str]) -> str:
    """The one error line of a sub-command that must exit 2."""
    code, _, err = command(args)
    return one_error(code, err)


def why_not(run_dir: Path, path: Path) -> str:
    """The one error line of `dltrain predict RUN PATH`."""
    return refused(["predict", str(run_dir), str(path)])


def export(run_dir: Path) -> tuple[torch.jit.ScriptModule, dict]:
    code, out, err = command(["export", str(run_dir)])
    assert code == 0 and "preprocessing: wrote" in out, (out, err)
    info = json.loads((run_dir / "export" / "model.preprocessing.json").read_text())
    return torch.jit.load(str(run_dir / "export" / "model.ts")), info


def eval_predictions(run_dir: Path) -> list[dict[str, str]]:
    code, out, err = command(["eval", str(run_dir), "--predictions", str(run_dir / "eval.csv")])
    assert code == 0, (out, err)
    return read_rows(run_dir / "eval.csv")


# --- csv ----------------------------------------------------------------------------------------------------
def write_csv(path: Path, n: int, seed: int) -> Path:
    """Columns id (ignored), a, b (numbers on different scales), color (text), label (from a, b and color)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n) * 10 + 5
    color = rng.choice(["red", "green", "blue"], n)
    score = 1.5 * a - b / 10 + (color == "red")
    label = np.where(score < -0.5, "low", np.where(score < 0.8, "mid", "high"))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "a", "b", "color", "label"])
        writer.writerows([f"r{i}", f"{a[i]:.4f}", f"{b[i]:.3f}", color[i], label[i]] for i in range(n))
    return path


def csv_run(tmp_path: Path, target: str = "label", name: str = "run") -> Path:
    train, test = write_csv(tmp_path / "train.csv", 240, 0), write_csv(tmp_path / "test.csv", 30, 1)
    drop = "[id]" if target == "label" else "[id,label]"
    run(["data=csv", f"data.path={train}", f"data.test_path={test}", f"data.target={target}", f"data.drop={drop}",
         "model=mlp", "model.hidden=[16]", *QUICK, "optim.lr=0.02", "trainer.max_epochs=8"], tmp_path / name)
    return tmp_path / name


def raw_rows(info: dict, rows: list[dict[str, str]]) -> torch.Tensor:
    """What the export's JSON says the model takes: numeric columns as numbers, then one-hot blocks."""
    out = []
    for row in rows:
        values = []
        for column in info["columns"]:
            cell = row[column["name"]]
            values += [float(cell)] if column["kind"] == "numeric" else [float(cell == c) for c in column["categories"]]
        out.append(values)
    return torch.tensor(out, dtype=torch.float32)


@pytest.mark.parametrize("target", ["label", "a"])  # classification, regression (standardized target)
def test_csv_predict_eval_and_export_agree(tmp_path: Path, target: str) -> None:
    run_dir = csv_run(tmp_path, target)
    result = cli(["predict", "run", "test.csv", "--out", "predicted.csv"], cwd=tmp_path)
    assert result.returncode == 0 and "30 prediction(s)" in result.stdout, result.stderr
    predicted = read_rows(tmp_path / "predicted.csv")
    evaluated = eval_predictions(run_dir)
    assert [r["input"] for r in predicted] == [f"test.csv:{line}" for line in range(2, 32)]
    model, info = export(run_dir)
    rows = read_rows(tmp_path / "test.csv")
    with torch.no_grad():
        exported = model(raw_rows(info, rows))
    if (run_dir / "export" / "model.onnx").is_file():  # written when the onnx extra is installed: the same function
        ort = pytest.importorskip("onnxruntime")
        (onnx_out,) = ort.InferenceSession(str(run_dir / "export" / "model.onnx")).run(
            None, {"input": raw_rows(info, rows).numpy()})
        np.testing.assert_allclose(onnx_out, exported.numpy(), rtol=1e-4, atol=1e-5)
    if target == "label":
        assert [r["prediction"] for r in predicted] == [r["prediction"] for r in evaluated]
        assert [r["probability"] for r in predicted] == [r["probability"] for r in evaluated]
        assert [info["class_names"][i] for i in exported.argmax(dim=1).tolist()] == [r["prediction"] for r in predicted]
        assert [r["target"] for r in evaluated] == [r["label"] for r in rows]
        assert sum(r["prediction"] == r["target"] for r in evaluated) > 15  # it learned something (3 classes)
    else:  # in the target's own units, not standardized ones
        values = np.array([float(r["prediction"]) for r in predicted])
        np.testing.assert_allclose(values, [float(r["prediction"]) for r in evaluated], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(exported[:, 0].numpy(), values, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose([float(r["target"]) for r in evaluated], [float(r["a"]) for r in rows], atol=1e-4)
    printed = command(["predict", str(run_dir), str(tmp_path / "test.csv")])[1].splitlines()
    assert printed[0].split() == ["input", "prediction", *(["probability"] if target == "label" else [])]
    assert printed[1].split() == [f"{tmp_path / 'test.csv'}:2", *list(predicted[0].values())[1:]]


def test_bad_inputs_are_one_line_and_exit_2(tmp_path: Path) -> None:
    run_dir = csv_run(tmp_path)
    (tmp_path / "lacks.csv").write_text("a,color\n1,red\n")
    result = cli(["predict", str(run_dir), "lacks.csv"], cwd=tmp_path)  # as a user sees it: no traceback
    assert one_error(result.returncode, result.stderr) == (
        "dltrain: error: lacks.csv lacks the column(s) 'b'; give CSV files (','-separated, a header line) with the "
        "columns a, b, color (any order; the target 'label' and other columns are ignored)")
    (tmp_path / "word.csv").write_text("a,b,color,label\n1,2,red,low\n1,two,red,low\n")
    assert "word.csv, line 3, column 'b': 'two' is not a number" in why_not(run_dir, tmp_path / "word.csv")
    (tmp_path / "hole.csv").write_text("a,b,color\n1,,red\n")
    assert "hole.csv, line 2, column 'b': missing value; the run trained with data.missing=error" in \
        why_not(run_dir, tmp_path / "hole.csv")
    assert f"{tmp_path / 'none.csv'} is not a file" in why_not(run_dir, tmp_path / "none.csv")
    (tmp_path / "huge.csv").write_text("a,b,color\n1,1e39,red\n")  # a float64, infinite as the model's float32
    assert "huge.csv, line 2, column 'b': '1e39' is infinite as float32" in why_not(run_dir, tmp_path / "huge.csv")
    saved = torch.load(run_dir / "best.pt", weights_only=True)
    del saved["preprocessing"]  # as a checkpoint of an older dltrain
    torch.save(saved, tmp_path / "old.pt")
    assert "old.pt holds no preprocessing description (trained by an older dltrain" in \
        why_not(tmp_path / "old.pt", tmp_path / "test.csv")
    code, out, _ = command(["export", str(tmp_path / "old.pt"), "--out", str(tmp_path / "old")])
    assert code == 0 and "holds no preprocessing description" in out
    assert not (tmp_path / "old" / "model.preprocessing.json").exists()
    saved["preprocessing"] = {"format": 1, "input": "table"}  # damaged
    torch.save(saved, tmp_path / "edited.pt")
    assert "its preprocessing description is malformed" in why_not(tmp_path / "edited.pt", tmp_path / "test.csv")


def test_eval_scales_by_the_saved_statistics_when_the_data_changed(tmp_path: Path) -> None:
    run_dir = csv_run(tmp_path)
    before = eval_predictions(run_dir)
    train = tmp_path / "train.csv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:-40]) + "\n")  # fewer training rows: other means and stds
    code, out, err = command(["eval", str(run_dir), "--predictions", str(tmp_path / "after.csv")])
    assert code == 0 and "statistics changed" in err, err
    assert [r["prediction"] for r in read_rows(tmp_path / "after.csv")] == [r["prediction"] for r in before]
    train.write_text(lines[0] + "\n" + "\n".join(line.replace(",red,", ",purple,") for line in lines[1:]) + "\n")
    assert "no longer matches what the run trained on (columns differ)" in refused(["eval", str(run_dir)])


# --- image_folder -------------------------------------------------------------------------------------------
def test_images_predict_eval_and_export_agree(tmp_path: Path) -> None:
    from PIL import Image

    from dltrain.data import split_indices
    from dltrain.data.image_folder import scan

    root = write_images(tmp_path / "imgs", per_class=20)
    run_dir = tmp_path / "run"
    run(["data=image_folder", f"data.root={root}", "data.size=[12,10]", "data.fractions=[0.6,0.2,0.2]",
         "data.batch_size=16", "model=cnn", "model.channels=[4,8]", "model.head=[16]", *QUICK], run_dir)
    _, files, _ = scan(root.resolve())
    test_files = [files[i] for i in split_indices(len(files), (0.6, 0.2, 0.2), 0)[2].tolist()]
    code, out, err = command(["predict", str(run_dir), *map(str, test_files), "--out", str(tmp_path / "p.csv")])
    assert code == 0, err
    predicted = [r["prediction"] for r in read_rows(tmp_path / "p.csv")]
    assert predicted == [r["prediction"] for r in eval_predictions(run_dir)]
    model, info = export(run_dir)
    h, w = info["image"]["size"]
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
                       for f in test_files]).transpose(0, 3, 1, 2)  # as the JSON says: RGB 0..255, channels first
    with torch.no_grad():
        exported = model(torch.from_numpy(pixels).float()).argmax(dim=1)
    assert [info["class_names"][i] for i in exported.tolist()] == predicted
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert "broken.png is not a readable image" in why_not(run_dir, tmp_path / "broken.png")
    assert "notes.txt is not an image file; give image files (.png, .jpg, ...); they are converted to 3 " \
           "channel(s) and resized to 12x10" in why_not(run_dir, root / "bars" / "notes.txt")
    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png")  # 18 KB, 144 megapixels: 432 MB as RGB
    bomb = cli(["predict", str(run_dir), "bomb.png"], cwd=tmp_path)  # as a user sees it: no Pillow warning either
    assert one_error(bomb.returncode, bomb.stderr) == (
        "dltrain: error: bomb.png: Image size (144000000 pixels) exceeds limit of 89478485 pixels, could be "
        "decompression bomb DOS attack; resize it to at most 89,478,485 pixels (PIL.Image.MAX_IMAGE_PIXELS)")


# --- imdb ---------------------------------------------------------------------------------------------------
def test_text_files_predict_eval_and_export_agree(tmp_path: Path) -> None:
    from dltrain.data.imdb import tokenize

    root = write_reviews(tmp_path / "reviews", train=40, test=10)
    run_dir = tmp_path / "run"
    run(["data=imdb", f"data.root={root}", "data.seq_len=20", "data.vocab_size=60", "data.batch_size=16",
         "model=lstm", "model.hidden_size=8", "model.embed_dim=8", *QUICK], run_dir)
    test = root / "aclImdb" / "test"
    test_files = sorted((test / "neg").glob("*.txt")) + sorted((test / "pos").glob("*.txt"))  # the test split's order
    code, out, err = command(["predict", str(run_dir), *map(str, test_files), "--out", str(tmp_path / "p.csv")])
    assert code == 0, err
    predicted = [r["prediction"] for r in read_rows(tmp_path / "p.csv")]
    assert predicted == [r["prediction"] for r in eval_predictions(run_dir)]
    model, info = export(run_dir)
    text = info["text"]
    index = {word: i for i, word in enumerate(text["vocab"])}
    ids = torch.zeros(len(test_files), text["seq_len"], dtype=torch.long)  # padding 0 at the front
    for row, path in enumerate(test_files):
        tail = [index.get(word, text["unknown"]) for word in tokenize(path.read_text())][-text["seq_len"]:]
        ids[row, text["seq_len"] - len(tail):] = torch.tensor(tail)
    with torch.no_grad():
        exported = model(ids).argmax(dim=1)
    assert [info["class_names"][i] for i in exported.tolist()] == predicted
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 was great")
    assert "latin1.txt is not UTF-8 text" in why_not(run_dir, tmp_path / "latin1.txt")


# --- arrays: the built-in digits as raw 8x8 grey levels ------------------------------------------------------
def test_raw_digits_from_npy_match_eval(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    from dltrain.data import split_indices

    run_dir = tmp_path / "run"
    run(["model=mlp", "model.hidden=[16]", *QUICK], run_dir)
    images = load_digits().images.astype(np.float32)[:, None]  # (N, 1, 8, 8), grey levels 0..16
    np.save(tmp_path / "test.npy", images[split_indices(len(images), (0.6, 0.2, 0.2), 0)[2].numpy()])
    code, out, err = command(["predict", str(run_dir), str(tmp_path / "test.npy"), "--out", str(tmp_path / "p.csv")])
    assert code == 0, err
    predicted = read_rows(tmp_path / "p.csv")
    evaluated = eval_predictions(run_dir)
    assert [r["prediction"] for r in predicted] == [r["prediction"] for r in evaluated]
    assert predicted[0]["input"] == f"{tmp_path / 'test.npy'}[0]" and len(predicted) == 360
    np.save(tmp_path / "flat.npy", images[:3].reshape(3, 64))
    assert "flat.npy holds float32 samples of shape (64,); give .npy/.npz files of samples of shape (1, 8, 8)" in \
        why_not(run_dir, tmp_path / "flat.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 8, 8)))
    assert "empty.npy holds no samples; give .npy/.npz files" in why_not(run_dir, tmp_path / "empty.npy")
    huge = images[:3].astype(np.float64)
    huge[1, 0, 2, 2] = 1e39  # finite as float64, inf as the model's float32: it predicted NaN
    np.save(tmp_path / "huge.npy", huge)
    assert "huge.npy holds NaN or infinite values (as float32, the model's input type: beyond ±3.4e38 is " \
           "infinite)" in why_not(run_dir, tmp_path / "huge.npy")


def test_a_category_the_run_never_trained_on_is_refused_or_zeroed_when_asked(tmp_path: Path) -> None:
    """`purple` used to get a confident class without a word; now one line, or all zeros with a warning."""
    run_dir = csv_run(tmp_path)
    (tmp_path / "new.csv").write_text("a,b,color\n0.5,4.0,red\n0.5,4.0,purple\n0.1,2.0,purple\n")
    result = cli(["predict", str(run_dir), "new.csv"], cwd=tmp_path)
    assert one_error(result.returncode, result.stderr) == (
        "dltrain: error: new.csv, line 3, column 'color': 'purple' is not a category the run trained on (known: "
        "blue, green, red); fix the value, or give --unseen-category zeros to encode it as none of them")
    zeroed = cli(["predict", str(run_dir), "new.csv", "--unseen-category", "zeros"], cwd=tmp_path)
    assert zeroed.returncode == 0, zeroed.stderr
    assert zeroed.stderr.strip() == ("dltrain: warning: new.csv: categories the run never trained on, encoded as "
                                     "none of its categories (all zeros): column 'color': 'purple' (2 row(s))")
    assert len(zeroed.stdout.strip().splitlines()) == 4  # the header and three predictions
    assert "not a choice; valid: error, zeros" in why_not_with(run_dir, tmp_path / "new.csv", "--unseen-category",
                                                               "maybe")


def why_not_with(run_dir: Path, path: Path, *options: str) -> str:
    return refused(["predict", str(run_dir), str(path), *options])
