"""A resume that only has to finish a run (killed right after its final checkpoint, or its metrics.json lost to a
full disk) gives the metrics.json (timings aside) and TensorBoard curves of the run that was never interrupted: the
last epoch's metrics come from the checkpoint ("final" was {}), the test values are logged once (a second copy
was), and an early-stopped run gives the reason it stopped."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import cli, load_scalars
from tests.conftest import run as run_in_process

QUICK = ["model.hidden=[16]", "trainer.log_every_n_steps=0"]
TIMINGS = ("wall_seconds",)  # the finishing command's own time; train_seconds and per-epoch times are the run's


def report(run_dir: Path, drop: tuple[str, ...] = TIMINGS) -> dict:
    return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k not in drop}


def test_a_sweep_job_that_lost_its_metrics_is_finished_as_if_never_interrupted(tmp_path) -> None:
    sweep = ["-m", "optim.lr=0.1,0.05", *QUICK, "trainer.max_epochs=2", "hydra.sweep.dir=sweep"]
    first = cli(sweep, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    job = tmp_path / "sweep" / "optim.lr=0.05"
    uninterrupted, curves = report(job), load_scalars(job)
    assert uninterrupted["final"] and "z_more/test/acc" in curves  # tags.board_tag("test/acc")
    (job / "metrics.json").unlink()  # a full disk took it, or a kill came after the test values were logged
    again = cli(sweep, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert report(job) == uninterrupted
    assert load_scalars(job) == curves  # one value per tag and step: the test values too


def test_an_early_stopped_run_killed_before_its_report_is_finished_with_the_same_report(tmp_path) -> None:
    # min_delta 10: no epoch after the first improves, so patience 1 stops the run at epoch 2 of 5
    run = [*QUICK, "trainer.max_epochs=5", "early_stopping.patience=1", "early_stopping.min_delta=10"]
    first = run_in_process(run, tmp_path / "run")  # the run never interrupted: only the report to compare with
    assert first["status"] == "completed", first
    uninterrupted, curves = report(tmp_path / "run", (*TIMINGS, "overrides")), load_scalars(tmp_path / "run")
    assert uninterrupted["epochs"] == 2 and uninterrupted["stop_reason"].startswith("early stopping: val/loss")
    shutil.copytree(tmp_path / "run", tmp_path / "killed")
    (tmp_path / "killed" / "metrics.json").unlink()
    finished = cli([*run, "trainer.resume=killed"], cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert report(tmp_path / "killed", (*TIMINGS, "overrides")) == uninterrupted
    assert load_scalars(tmp_path / "killed") == curves
