"""Nothing lost, nothing run: damaged checkpoints are refused in one line; a run killed anywhere (between
last.pt and best.pt, after its final last.pt, inside a write) resumes to the result of an uninterrupted run
and leaves no temp file. Kills are injected by the tests into a child process (production code has no hooks).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from dltrain.core import checkpoint
from dltrain.core.registry import ConfigError
from dltrain.tools.evaluation import load_run
from tests.conftest import REPO, cli, load_scalars, run

QUICK = ["model.hidden=[32]", "trainer.max_epochs=2", "trainer.log_every_n_steps=0"]
# lr 0.03 makes val/loss improve at epochs 1, 2, 3, 5, 6, 7 but not 4 and 8: best.pt and last.pt differ
NOISY = ["model.hidden=[32]", "model.dropout=0.2", "optim=adam", "optim.lr=0.03", "sched=step",
         "sched.boundaries=[4]", "trainer.max_epochs=8", "trainer.log_every_n_steps=0", "early_stopping.patience=100"]

# The child runs the `dltrain` command with os.replace patched to die (os._exit: no cleanup, like kill -9) at the
# nth replace of a file named NAME, before or after the rename.
KILLER = """
import os, sys
name, nth, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seen, real = [0], os.replace
def replace(src, dst):
    hit = os.path.basename(dst) == name and seen[0] + 1 == nth
    seen[0] += os.path.basename(dst) == name
    if hit and when == "before":
        os._exit(9)
    real(src, dst)
    if hit:
        os._exit(9)
os.replace = replace
from dltrain.cli.main import main
sys.argv = ["dltrain", *sys.argv[4:]]
main()
"""


def killed_run(args: list[str], cwd: Path, name: str, nth: int, when: str = "after") -> None:
    """`dltrain ARGS` in a child that dies at the nth replace of NAME (exit code 9)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-c", KILLER, name, str(nth), when, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr


def weights(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def hparams_written(run_dir: Path) -> bool:
    """Some event file of the run holds an HParams summary."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return any(value.metadata.plugin_data.plugin_name == "hparams"
               for path in run_dir.glob("events.out.tfevents.*") for event in EventFileLoader(str(path)).Load()
               for value in event.summary.value)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted NOISY run, trained in this process: only the end the killed CLI runs are compared with
    (bit-equal to the command line's: a run picks its threads by its config and cores, run/threads.py; the
    early-stopped test below compares an in-process run with a killed CLI run the same way)."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert run(NOISY, run_dir)["status"] == "completed"
    return run_dir


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished")
    run(QUICK, run_dir)
    return run_dir


# ---- item 2: damaged checkpoints are one-line errors -----------------------------------------------------

def first_weight(saved: dict[str, Any]) -> str:
    return next(k for k, v in saved["model"].items() if v.is_floating_point())


def nan_weights(saved: dict[str, Any]) -> None:
    saved["model"][first_weight(saved)][0] = math.nan


DAMAGES = {
    "no config": (lambda s: s.pop("config"), "has no embedded config"),
    "config not a mapping": (lambda s: s.update(config="just words"), "config is not a mapping"),
    "config of another type": (lambda s: s.update(config=7), "has no embedded config"),
    "bad YAML": (lambda s: s.update(config="model: [unclosed"), "config is not valid YAML"),
    "weights of another shape": (lambda s: s["model"].update({first_weight(s): torch.zeros(3, 3)}), "does not fit"),
    "non-integer epoch": (lambda s: s.update(epoch=1.5), "epoch=1.5"),
    "malformed RNG": (lambda s: s.update(rng=[{"torch": torch.zeros(3)}]), "RNG state"),
    "RNG not a list": (lambda s: s.update(rng="abc"), "RNG state"),
    "non-finite weights": (nan_weights, "non-finite weights"),
}


def damaged_copy(finished: Path, target: Path, damage: str) -> Path:
    """A copy of the finished run whose last.pt (its only checkpoint) has the damage."""
    target.mkdir()
    saved = checkpoint.load(finished / "last.pt")
    DAMAGES[damage][0](saved)
    torch.save(saved, target / "last.pt")
    return target


def one_line(err: ConfigError) -> str:
    assert len(err.problems) == 1 and "\n" not in str(err), str(err)
    return str(err)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_refused_by_eval_and_resume_in_one_line(finished, tmp_path, damage) -> None:
    run_dir = damaged_copy(finished, tmp_path / "run", damage)
    message = DAMAGES[damage][1]
    with pytest.raises(ConfigError) as refused:
        load_run(run_dir)  # what eval, export and generate load
    assert message in one_line(refused.value)
    with pytest.raises(ConfigError) as refused:
        run([*QUICK, "trainer.max_epochs=3", f"trainer.resume={run_dir}"], run_dir)
    assert message in one_line(refused.value)


@pytest.mark.parametrize("command, damage", [(["eval"], "bad YAML"), (["export"], "non-finite weights"),
                                             (["generate"], "weights of another shape")])
def test_commands_on_a_damaged_checkpoint_exit_2_with_one_line(finished, tmp_path, command, damage) -> None:
    run_dir = damaged_copy(finished, tmp_path / "run", damage)
    done = cli([*command, str(run_dir)], cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("dltrain: error: ") and DAMAGES[damage][1] in done.stderr


def test_resume_of_a_damaged_checkpoint_exits_2_with_one_line(finished, tmp_path) -> None:
    run_dir = damaged_copy(finished, tmp_path / "run", "non-integer epoch")
    done = cli([*QUICK, "trainer.max_epochs=3", f"trainer.resume={run_dir}"], cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("dltrain: error: ") and "epoch=1.5" in done.stderr


# ---- item 3: best.pt and last.pt agree under any interruption --------------------------------------------

def assert_same_result(run_dir: Path, straight: Path) -> None:
    """Same weights, best epoch, best.pt and test metrics as the uninterrupted run; no temp file."""
    ours, theirs = metrics(run_dir), metrics(straight)
    assert ours["status"] == "completed" and ours["epochs"] == theirs["epochs"]
    assert (ours["best_epoch"], ours["best"]) == (theirs["best_epoch"], theirs["best"])
    assert ours["test"] == theirs["test"]
    assert checkpoint.load(run_dir / "best.pt")["epoch"] == ours["best_epoch"]
    assert same_weights(run_dir / "best.pt", straight / "best.pt")
    assert same_weights(run_dir / "last.pt", straight / "last.pt")
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_kill_between_last_and_best_of_the_best_epoch_resumes_to_the_same_result(straight, tmp_path) -> None:
    best_epoch = metrics(straight)["best_epoch"]
    assert best_epoch == 7  # NOISY's best; epoch 8 does not improve, so the resumed run tests restored weights
    killed_run([*NOISY, "hydra.run.dir=run"], tmp_path, "last.pt", best_epoch)  # last.pt of epoch 7, no best.pt
    run_dir = tmp_path / "run"
    assert checkpoint.load(run_dir / "last.pt")["best"]["epoch"] == best_epoch
    done = cli([*NOISY, "trainer.resume=run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_same_result(run_dir, straight)


# ---- item 4: a run killed after its final last.pt can be finished ---------------------------------------

def test_a_run_killed_after_its_final_checkpoint_is_finished_by_resume(straight, tmp_path) -> None:
    killed_run([*NOISY, "hydra.run.dir=run"], tmp_path, "last.pt", 8)
    run_dir = tmp_path / "run"
    assert not (run_dir / "metrics.json").exists()
    done = cli([*NOISY, "trainer.resume=run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "epoch 8/8" not in done.stdout  # nothing trained again
    assert_same_result(run_dir, straight)
    scalars = load_scalars(run_dir)
    assert scalars["z_more/test/acc"][-1] == (8, pytest.approx(metrics(straight)["test"]["test/acc"]))
    assert hparams_written(run_dir)  # the HParams session, so that the run shows in a sweep's table
    again = cli([*NOISY, "trainer.resume=run"], cwd=tmp_path)  # now it is complete: refused as before
    assert again.returncode == 2 and "already trained 8 epochs" in again.stderr


def test_an_unfinished_run_resumed_with_fewer_epochs_says_how_to_finish_it(straight, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    (run_dir / "metrics.json").unlink()
    with pytest.raises(ConfigError) as refused:
        run([*NOISY, "trainer.max_epochs=6", f"trainer.resume={run_dir}"], run_dir)
    assert one_line(refused.value) == ("the run to resume already trained 8 epochs; set trainer.max_epochs above 8 "
                                       "to continue it, or set trainer.max_epochs=8 to finish it (test and "
                                       "metrics.json)")


def test_a_best_pt_that_last_pt_does_not_name_is_refused(straight, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    saved = checkpoint.load(run_dir / "best.pt")  # epoch 7, the best
    saved["epoch"] = saved["best"]["epoch"] = 6  # as if from another run
    torch.save(saved, run_dir / "best.pt")
    with pytest.raises(ConfigError) as refused:
        run([*NOISY, "trainer.max_epochs=9", f"trainer.resume={run_dir}"], run_dir)
    assert "best.pt holds epoch 6 but" in one_line(refused.value) and "names epoch 7 as the best" in str(refused.value)


def test_an_early_stopped_run_killed_before_metrics_is_finished_by_resume(tmp_path) -> None:
    stopping = [*NOISY, "early_stopping.patience=1"]  # epoch 4 does not improve: stops there
    straight = run(stopping, tmp_path / "straight")
    assert straight["epochs"] == 4 and straight["best_epoch"] == 3
    killed_run([*stopping, "hydra.run.dir=run"], tmp_path, "last.pt", 4)
    done = cli([*stopping, "trainer.resume=run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = metrics(tmp_path / "run")
    assert report["status"] == "completed" and report["epochs"] == 4 and report["test"] == straight["test"]
    assert report["stop_reason"].startswith("early stopping")


# ---- items 5 and 8: atomic files, no orphan temp files --------------------------------------------------

def test_every_file_a_later_command_reads_arrives_by_rename(tmp_path, monkeypatch) -> None:
    renamed, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(Path(dst).name), real(src, dst))[1])
    run(QUICK, tmp_path)
    assert {"config.yaml", "metrics.json", "last.pt", "best.pt"} <= set(renamed)


def test_a_kill_inside_a_checkpoint_write_leaves_a_temp_file_that_resume_removes(straight, tmp_path) -> None:
    killed_run([*NOISY, "hydra.run.dir=run"], tmp_path, "best.pt", 3, when="before")  # best.pt of epoch 3, unrenamed
    run_dir = tmp_path / "run"
    assert [p.name for p in run_dir.glob(".best.pt.*.tmp")]  # the orphan the kill left
    (run_dir / ".last.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")  # and one more, as a kill would leave
    done = cli([*NOISY, "trainer.resume=run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_same_result(run_dir, straight)


def test_a_refused_resume_keeps_an_unfinished_runs_files_and_tidies_a_completed_one(finished, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "metrics.json").unlink()  # unfinished: a refused resume leaves everything as it was
    (run_dir / ".last.pt.abc.tmp").write_bytes(b"x")
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ConfigError):
        run([*QUICK, "model.hidden=[8]", "trainer.max_epochs=3", f"trainer.resume={run_dir}"], run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == before
    shutil.copy(finished / "metrics.json", run_dir)  # completed: its writes are over, so its orphans go
    (run_dir / ".metrics.json.def.tmp").write_bytes(b"{")  # a kill in metrics.json's rewrite leaves one
    with pytest.raises(ConfigError, match="already trained 2 epochs"):
        run(QUICK + [f"trainer.resume={run_dir}"], run_dir)
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# ---- the torture script, short ------------------------------------------------------------------------

@pytest.mark.slow
def test_torture_short(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "torture.py"), "--trials", "3", "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3/3 trials passed" in done.stdout, done.stdout
