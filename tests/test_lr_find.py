"""`dltrain lr-find` (dltrain/tools/lr_find.py, lr_chart.py): the rates it trains, that each rate's run is the
ordinary run at that rate, the suggestion, the files it leaves, and the one-line refusals."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from PIL import Image

from conftest import cli, run
from dltrain.sweep.command_line import CommandLine
from dltrain.tools.lr_chart import text_chart
from dltrain.tools.lr_chart import Found, edge_note
from dltrain.tools.lr_find import STEPS_PER_RATE, Probe, budget, composed, at_rate, find, read_options, replaced


def test_the_rates_are_log_spaced_three_per_decade_and_rounded_as_printed() -> None:
    rates = Probe().rates()
    assert len(rates) == 16 and rates[0] == 1e-5 and rates[-1] == 1.0
    assert rates[:4] == [1e-5, 2.15e-5, 4.64e-5, 1e-4]
    assert all(float(f"{r:.3g}") == r for r in rates)
    ratios = [b / a for a, b in zip(rates, rates[1:])]
    assert max(ratios) / min(ratios) < 1.01
    assert Probe(num=5, low=1e-3, high=10).rates() == [1e-3, 1e-2, 0.1, 1.0, 10.0]


@pytest.mark.parametrize(("args", "problem"), [
    (["--num=2"], "--num=2 must be between 3 and 64"),
    (["--num", "many"], "--num takes a whole number, got 'many'"),
    (["--min=1", "--max=0.1"], "must satisfy 0 < min < max"),
    (["--epochs=0"], "--epochs=0 must be at least 1"),
    (["--epochs=some"], "--epochs takes a whole number or auto, got 'some'"),
])
def test_bad_options_are_one_line(args: list[str], problem: str) -> None:
    assert problem in read_options(args)[2]


def test_options_are_taken_out_and_the_rest_is_the_run() -> None:
    probe, rest, problem = read_options(["model=cnn", "--num", "8", "--min=1e-4", "optim=adam", "--epochs=2"])
    assert problem is None and rest == ["model=cnn", "optim=adam"]
    assert probe == Probe(num=8, low=1e-4, high=1.0, epochs=2)
    assert read_options(["--epochs", "auto"])[0].epochs is None and Probe().epochs is None  # auto, the default


def test_auto_epochs_give_each_rate_300_steps_at_most_the_runs_epochs() -> None:
    # digits: 1,078 training samples in batches of 64 = 17 steps an epoch; 18 epochs = 306 steps
    plain = composed([])
    assert budget(at_rate(plain, 0.1, None, None), Probe())[0] == math.ceil(STEPS_PER_RATE / 17) == 18
    short = composed(["trainer.max_epochs=5"])
    epochs, how = budget(at_rate(short, 0.1, None, None), Probe())
    assert epochs == 5 and "85 optimizer steps" in how and "at most the run's 5 epochs" in how
    assert budget(at_rate(plain, 0.1, None, None), Probe(epochs=2)) == (2, "")


def test_the_probe_sets_the_rate_schedule_budget_and_stopping_itself() -> None:
    given = ["model=cnn", "optim=adam", "optim.lr=0.1", "optim.betas=[0.8,0.9]", "sched=cosine", "sched.warmup=3",
             "trainer.max_epochs=30", "trainer.seed=2", "early_stopping.patience=2", "+trainer.ckpt.save_last=true"]
    assert replaced(given) == ["optim.lr=0.1", "sched=cosine", "sched.warmup=3", "trainer.max_epochs=30",
                               "early_stopping.patience=2", "+trainer.ckpt.save_last=true"]


def found(losses: list[float | None]) -> Found:
    rates = Probe(num=len(losses)).rates()
    return Found(rates, losses, ["completed" if v is not None else "diverged" for v in losses], [{}] * len(losses))


def test_the_suggestion_is_the_lowest_val_loss_and_an_edge_is_said() -> None:
    middle = found([2.3, 2.0, 1.0, 0.52, 0.5, 0.9, None])
    assert middle.best == 4 and middle.near_best() == (middle.rates[3], middle.rates[4])
    assert edge_note(middle, Probe(num=7)) is None
    top = found([2.3, 2.0, 1.0, 0.5])
    assert top.best == 3 and "--max=100" in edge_note(top, Probe(num=4))
    bottom = found([0.4, 0.5, 1.0, None])
    assert bottom.best == 0 and "--min=1e-07" in edge_note(bottom, Probe(num=4))
    assert found([None, None, None]).best is None


def test_the_text_chart_marks_the_best_above_the_top_and_diverged() -> None:
    curve = found([2.3, 2.2, 1.0, 0.5, 9.0, None])
    lines = text_chart(curve.rates, curve.losses, curve.best, width=80)
    plot = [line.partition("|")[2] for line in lines[:10]]
    assert plot[9].count("*") == 1 and "*" not in "".join(plot[:9])  # the best on the bottom row, only there
    assert plot[0].count("^") == 1 and plot[0].count("x") == 1  # 9.0 is above 1.5x the lowest rate's 2.3
    assert "".join(plot).count("o") == 3
    assert "2.3" in lines[0] and "0.5" in lines[9] and "learning rate" in lines[-1]


def probe_in(tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, Path, str, str]:
    """`dltrain lr-find ARGS` in-process (as cli/main.py calls it), into tmp_path; its exit code, folder, stdout
    and stderr."""
    probe, rest, problem = read_options(args)
    assert problem is None
    code = find(CommandLine.read([*rest, f"hydra.run.dir={tmp_path / 'probe'}"]), probe)
    out, err = capsys.readouterr()
    return code, tmp_path / "probe", out, err


def test_each_rate_is_the_ordinary_run_at_that_rate_and_the_best_is_suggested(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    given = ["optim=adam", "sched=cosine", "trainer.max_epochs=30", "trainer.seed=3"]
    code, root, out, _ = probe_in(tmp_path, ["--num=6", "--min=1e-4", "--max=10", "--epochs=1", *given], capsys)
    assert code == 0
    saved = json.loads((root / "lr_find.json").read_text())
    rates = saved["rates"]
    assert rates == Probe(6, 1e-4, 10.0).rates()
    reports = [json.loads((root / name / "metrics.json").read_text()) for name in saved["runs"]]
    assert [r["epochs"] for r in reports] == [1] * 6 and all(r["final"]["lr"] == lr for r, lr in zip(reports, rates))
    assert not any((root / name / f).exists() for name in saved["runs"] for f in ("last.pt", "best.pt"))
    losses = [r["best"] if r["status"] == "completed" else None for r in reports]
    assert saved["val_loss"] == losses
    best = min((k for k, v in enumerate(losses) if v is not None), key=lambda k: losses[k])
    assert saved["suggested"] == rates[best]
    for k in (best, 0):  # the suggested rate's run and the smallest rate's, each against an ordinary run
        alone = run(["optim=adam", "trainer.seed=3", f"optim.lr={rates[k]}", "sched=constant", "early_stopping=none",
                     "trainer.max_epochs=1"], tmp_path / f"alone{k}")
        assert math.isclose(alone["best"], losses[k], rel_tol=1e-5)
    command = f"dltrain optim=adam sched=cosine trainer.max_epochs=30 trainer.seed=3 optim.lr={rates[best]:g}"
    assert saved["command"] == command and out.rstrip().endswith(f"run it: {command}")
    assert "the probe sets these itself (the command it suggests keeps them): sched=cosine trainer.max_epochs=30" in out
    assert f"suggested: optim.lr={rates[best]:g}" in out and "<- lowest val/loss" in out
    with Image.open(root / "lr_find.png") as image:
        assert image.format == "PNG" and image.size == (800, 480)
        assert (255, 0, 0) in {color for _, color in image.getcolors(1 << 16)}  # the best, ringed in red


def test_a_run_that_cannot_be_stacked_is_refused_in_one_line_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, root, _, err = probe_in(tmp_path, ["model=cnn", "model.batch_norm=true"], capsys)
    assert code == 2 and not root.exists()
    assert err.count("\n") == 1 and "cannot be stacked: model.batch_norm=true" in err
    assert "dltrain -m model=cnn model.batch_norm=true optim.lr=1e-05,0.0001,0.001,0.01,0.1,1" in err


def test_the_command_line_finds_a_rate_and_the_command_it_prints_runs(tmp_path: Path) -> None:
    done = cli(["lr-find", "--num=5", "--min=1e-3", "--max=10", "trainer.seed=1"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("lr-find: 5 rates from 0.001 to 10 (log-spaced), trained side by side as one stack,\n"
                                  "         each held constant for 18 epochs (306 optimizer steps; --epochs auto")
    command = done.stdout.rstrip().splitlines()[-1].removeprefix("run it: ")
    assert command.startswith("dltrain trainer.seed=1 optim.lr=")
    (root,) = (tmp_path / "outputs" / "lr-find").glob("*/*")
    assert (root / "lr_find.png").is_file() and len(list(root.glob("*_lr=*/metrics.json"))) == 5
    again = cli([*command.split()[1:], "trainer.max_epochs=1"], tmp_path)
    assert again.returncode == 0, again.stderr


def test_a_projects_own_model_with_its_own_forward_is_refused(tmp_path: Path) -> None:
    assert cli(["init", "proj"], tmp_path).returncode == 0
    done = cli(["lr-find"], tmp_path / "proj")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "cannot be stacked: mynet: its model (MyNet) has its own forward" in done.stderr
    assert not (tmp_path / "proj" / "outputs" / "lr-find").exists() or \
        not any(os.scandir(tmp_path / "proj" / "outputs" / "lr-find"))
