"""dltrain eval / export / generate on real finished runs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from dltrain.tools.evaluation import confusion_matrix, evaluate_run, export, load_run
from tests.conftest import cli, load_scalars, run

QUICK = ["trainer.max_epochs=2", "model.hidden=[32]", "trainer.log_every_n_steps=0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    run(QUICK, run_dir)
    return run_dir


def test_eval_matches_the_runs_test_metrics_and_counts_every_sample(finished) -> None:
    report = json.loads((finished / "metrics.json").read_text())
    result = evaluate_run(load_run(finished), log_dir=finished)
    assert result["test/acc"] == pytest.approx(report["test"]["test/acc"])
    counts = torch.tensor(result["confusion_matrix"])
    assert counts.sum() == 360 and counts.diag().sum() / 360 == pytest.approx(result["test/acc"])
    per_class = counts.diag().float() / counts.sum(dim=1)
    assert result["per_class_acc"] == pytest.approx(per_class.tolist())


def test_confusion_matrix_counts_pairs() -> None:
    model = torch.nn.Identity()  # "logits" are one-hot predictions
    pred = torch.tensor([0, 1, 1, 2])
    counts = confusion_matrix(model, torch.eye(3)[pred], torch.tensor([0, 1, 2, 2]), 3)
    assert counts.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_eval_command_prints_and_logs_the_matrix_and_builds_no_optimizer(finished) -> None:
    """`dltrain eval RUN` (the console script's own call of main, in an interpreter that says at its end whether
    torch._dynamo was imported). It checks the run's config without building its optimizer, which nothing steps
    (export, predict and generate load a run the same way, tools/evaluation.with_config): torch.optim's first build
    imports torch._dynamo, ~1.5 s of a ~4 s command on 2 cores."""
    code = ("import sys\nfrom dltrain.cli.main import main\nsys.argv = ['dltrain', 'eval', sys.argv[1]]\ntry:\n"
            "    status = main()\nexcept SystemExit as end:\n    status = end.code\nassert not status, status\n"
            "print('DYNAMO' if 'torch._dynamo' in sys.modules else 'NO-DYNAMO')")
    result = subprocess.run([sys.executable, "-c", code, str(finished)], cwd=finished, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "confusion matrix" in result.stdout and "per-class accuracy" in result.stdout
    assert result.stdout.strip().endswith("NO-DYNAMO"), result.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(finished))
    acc.Reload()
    assert "z_more/test/confusion_matrix" in acc.Tags()["images"]
    assert "z_more/test/acc" in load_scalars(finished)


def test_torchscript_export_round_trips(finished, tmp_path) -> None:
    loaded = load_run(finished)
    written = export(loaded, tmp_path)
    scripted = torch.jit.load(str(written["torchscript"]))
    x = loaded.parts.data.test.x[:16]
    desc = loaded.preprocessing  # the export takes raw inputs: digits' grey levels, standardized inside it
    mean, std = (torch.tensor(desc[k]).reshape(-1, 1, 1) for k in ("mean", "std"))
    raw = x * std + mean
    torch.testing.assert_close(scripted(raw), loaded.parts.model(x), rtol=1e-4, atol=1e-5)
    if "onnx" in written:
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(written["onnx"]))
        (out,) = session.run(None, {"input": raw.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), loaded.parts.model(x), rtol=1e-4, atol=1e-5)


def test_eval_of_a_missing_run_is_one_line(tmp_path) -> None:
    result = cli(["eval", str(tmp_path / "nope")], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().startswith("dltrain: error: no checkpoint at")


def test_gan_run_evaluates_without_a_confusion_matrix_and_refuses_export(tmp_path) -> None:
    run(["model=gan", "task=adversarial", "optim=adam", "early_stopping=none", "trainer.max_epochs=1",
         "trainer.log_every_n_steps=0"], tmp_path)
    result = evaluate_run(load_run(tmp_path))
    assert {"test/d_loss", "test/g_loss"} <= set(result) and "confusion_matrix" not in result
    refused = cli(["export", str(tmp_path)], cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == ("dltrain: error: model=gan is generative (its forward trains it against a "
                                      "discriminator); export takes models that map inputs to outputs")


def test_export_to_an_unwritable_place_is_one_line(finished, tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    result = cli(["export", str(finished), "--out", str(tmp_path / "afile")], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith(f"dltrain: error: cannot write the export to {tmp_path / 'afile'}")


# --- eval on another test set of the run's kind (--data KEY=VALUE) ------------------------------------------
def test_eval_on_another_image_test_set_uses_the_runs_scaling_and_refuses_other_classes(tmp_path) -> None:
    from dltrain.data.image_folder import scan
    from tests.data.test_files import write_images
    from tests.data.test_splits import split_root
    from tests.test_predict import command, read_rows, refused

    root, run_dir = split_root(tmp_path / "imgs"), tmp_path / "run"
    run(["data=image_folder", f"data.root={root}", "data.size=[8,8]", "data.batch_size=8", "model=mlp", *QUICK],
        run_dir)
    events = sorted(run_dir.glob("events.*"))
    holdout = write_images(tmp_path / "holdout", per_class=4, seed=7)
    code, out, err = command(["eval", str(run_dir), "--data", f"test_root={holdout}", "--predictions",
                              str(tmp_path / "eval.csv")])
    assert code == 0 and not err, (out, err)
    assert out.splitlines()[0].endswith(f"on --data test_root={holdout} (12 test samples):")
    _, files, labels = scan(holdout)
    rows = read_rows(tmp_path / "eval.csv")
    assert [r["target"] for r in rows] == [["bars", "columns", "squares"][i] for i in labels]
    code, _, err = command(["predict", str(run_dir), *map(str, files), "--out", str(tmp_path / "predict.csv")])
    assert code == 0, err  # predict reads the raw files with the saved preprocessing: the same predictions
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in read_rows(tmp_path / "predict.csv")]
    assert sorted(run_dir.glob("events.*")) == events  # the run's TensorBoard holds its own test split only

    (holdout / "columns").rename(holdout / "circles")
    assert refused(["eval", str(run_dir), "--data", f"test_root={holdout}"]).startswith(
        f"dltrain: error: data=image_folder: data.test_root={holdout} has class folder(s) the train split lacks: "
        "circles; its classes must be among the train split's (bars, columns, squares)")
    assert refused(["eval", str(run_dir), "--data", f"data.root={holdout}"]) == (
        f"dltrain: error: --data data.root={holdout}: its classes (bars, circles, squares) are not the run's "
        "(bars, columns, squares); evaluate on data with the run's classes")
    assert refused(["eval", str(run_dir), "--data", "test_path=x.csv"]).startswith(
        "dltrain: error: --data test_path=x.csv: give KEY=VALUE with KEY an option of the run's data=image_folder "
        "(batch_size, cache_dir, channels, fractions, root, size, stratify, test_root, val_root)")
    assert "give KEY=VALUE" in refused(["eval", str(run_dir), "--data", "name=csv"])
    assert "give KEY=VALUE" in refused(["eval", str(run_dir), "--data", "test_root"])


def test_eval_on_another_csv_test_file(tmp_path) -> None:
    from tests.test_predict import command, csv_run, read_rows, refused, write_csv

    run_dir = csv_run(tmp_path)
    other = write_csv(tmp_path / "other.csv", 25, 9)
    code, out, err = command(["eval", str(run_dir), "--data", f"test_path={other}", "--predictions",
                              str(tmp_path / "eval.csv")])
    assert code == 0 and not err, (out, err)
    assert "(25 test samples)" in out.splitlines()[0]
    assert [r["target"] for r in read_rows(tmp_path / "eval.csv")] == [
        r["label"] for r in read_rows(other)]
    lines = other.read_text().splitlines()
    other.write_text("\n".join([*lines, lines[-1].rsplit(",", 1)[0] + ",extreme"]) + "\n")
    assert refused(["eval", str(run_dir), "--data", f"test_path={other}"]) == (
        f"dltrain: error: --data test_path={other}: its classes (extreme, high, low, mid) are not the run's "
        "(high, low, mid); evaluate on data with the run's classes")
