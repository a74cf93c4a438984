"""A sweep re-run into the same folder goes on from a killed job's own last.pt, and skips a job that another
process is training (a per-job lock that the OS releases when its holder dies)."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from dltrain import checkpoint
from tests.conftest import REPO, cli, load_scalars

SWEEP = ["-m", "optim.lr=0.1,0.05", "model.hidden=[16]", "trainer.max_epochs=3", "trainer.log_every_n_steps=0",
         "hydra.sweep.dir=sweep"]
CHILD = """
import os, sys
import dltrain.checkpoint as ckpt
save, resume = ckpt.save_atomic, ckpt.resume
def dying_save(obj, path):  # the lr=0.05 job dies while writing its epoch-2 checkpoint
    if os.environ.get("KILL") and obj["epoch"] == 2 and "lr: 0.05" in obj["config"]:
        os._exit(9)
    save(obj, path)
def noted_resume(state, callbacks, where, *args):
    saved_config = resume(state, callbacks, where, *args)
    open(os.environ["NOTE"], "a").write(f"resumed {where} at epoch {state.epoch}\\n")
    return saved_config
ckpt.save_atomic, ckpt.resume = dying_save, noted_resume
from dltrain.cli import main
sys.argv = ["dltrain", *sys.argv[1:]]
main()
"""


def sweep(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, *SWEEP], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "NOTE": str(tmp_path / "note"), **env})


def test_a_killed_sweep_job_resumes_from_its_own_last_checkpoint(tmp_path) -> None:
    killed = sweep(tmp_path, KILL="1")
    assert killed.returncode == 9, killed.stderr
    job = tmp_path / "sweep" / "optim.lr=0.05"
    assert checkpoint.load(job / "last.pt")["epoch"] == 1
    rerun = sweep(tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert (tmp_path / "note").read_text().splitlines() == [f"resumed {job} at epoch 1"]  # not from scratch
    assert "already finished; skipped" in rerun.stdout  # the lr=0.1 job
    assert checkpoint.load(job / "last.pt")["epoch"] == 3
    assert [s for s, _ in load_scalars(job)["val/loss"]] == [1, 2, 3]


def test_a_job_locked_by_another_process_is_skipped(tmp_path) -> None:
    job = tmp_path / "sweep" / "optim.lr=0.1"
    job.mkdir(parents=True)
    with open(job / ".dltrain.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another sweep" trains this job
        result = cli(SWEEP, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "locked by another process; skipped" in result.stdout
    assert not (job / "metrics.json").exists() and (tmp_path / "sweep" / "optim.lr=0.05" / "metrics.json").is_file()
