"""A sweep re-run into the same folder goes on from a killed job's own last.pt, and skips a job that another
process is training (a per-job lock that the OS releases when its holder dies)."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from dltrain.core import checkpoint
from tests.conftest import REPO, cli, load_scalars

SWEEP = ["-m", "optim.lr=0.1,0.05", "model.hidden=[16]", "trainer.max_epochs=3", "trainer.log_every_n_steps=0",
         "hydra.sweep.dir=sweep"]
CHILD = """
import os, sys
import dltrain.core.checkpoint as ckpt
import dltrain.run.resuming as resuming
save, resume = ckpt.save_atomic, resuming.resume
def dying_save(obj, path):  # the lr=0.05 job dies while writing its epoch-2 checkpoint
    if os.environ.get("KILL") and obj["epoch"] == 2 and "lr: 0.05" in obj["config"]:
        os._exit(9)
    save(obj, path)
def noted_resume(state, callbacks, where, *args):
    saved_config = resume(state, callbacks, where, *args)
    open(os.environ["NOTE"], "a").write(f"resumed {where} at epoch {state.epoch}\\n")
    return saved_config
ckpt.save_atomic, resuming.resume = dying_save, noted_resume
from dltrain.cli.main import main
sys.argv = ["dltrain", *sys.argv[1:]]
main()
"""


def sweep(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, *SWEEP], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "NOTE": str(tmp_path / "note"), **env})


def test_a_killed_sweep_job_resumes_from_its_own_last_checkpoint(tmp_path) -> None:
    """The re-run goes on from the killed job's own last.pt and, as it ends, removes the bookkeeping that the killed
    sweep left (`.dltrain-jobs/`)."""
    killed = sweep(tmp_path, KILL="1")
    assert killed.returncode == 9, killed.stderr
    job = tmp_path / "sweep" / "optim.lr=0.05"
    assert checkpoint.load(job / "last.pt")["epoch"] == 1
    assert len(os.listdir(tmp_path / "sweep" / ".dltrain-jobs")) == 1  # the killed sweep's
    rerun = sweep(tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert not (tmp_path / "sweep" / ".dltrain-jobs").exists()
    assert (tmp_path / "note").read_text().splitlines() == [f"resumed {job} at epoch 1"]  # not from scratch
    assert "already finished; skipped" in rerun.stdout  # the lr=0.1 job
    assert checkpoint.load(job / "last.pt")["epoch"] == 3
    assert [s for s, _ in load_scalars(job)["val/loss"]] == [1, 2, 3]


LISTENING = """
import sys
from pathlib import Path
from dltrain.sweep import ledger
with ledger.listening(Path(sys.argv[1])) as folder:
    print(folder.name, flush=True)
    sys.stdin.readline()
"""


def test_a_sweep_ending_keeps_the_ledger_of_a_sweep_that_runs_now(tmp_path, monkeypatch) -> None:
    """Two sweeps into one folder: the one that ends removes its own ledger and the killed sweeps' ones, not the
    other's while that runs; once the other is gone (here: it ends without closing, as a killed one), the next goes."""
    from dltrain.core import env
    from dltrain.sweep import ledger

    for name in (env.JOBS, env.SWEEP_PROCESS):  # listening() points this process's jobs at its ledger
        monkeypatch.delenv(name, raising=False)

    running = subprocess.Popen([sys.executable, "-c", LISTENING, str(tmp_path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    other = running.stdout.readline().strip()
    try:
        with ledger.listening(tmp_path) as mine:
            assert sorted(os.listdir(tmp_path / ".dltrain-jobs")) == sorted([other, mine.name])
        ledger.close(mine)
        assert os.listdir(tmp_path / ".dltrain-jobs") == [other]
    finally:
        running.communicate("\n", timeout=30)
    with ledger.listening(tmp_path) as mine:
        pass
    ledger.close(mine)
    assert not (tmp_path / ".dltrain-jobs").exists()


def test_a_job_locked_by_another_process_is_skipped(tmp_path) -> None:
    job = tmp_path / "sweep" / "optim.lr=0.1"
    job.mkdir(parents=True)
    with open(job / ".dltrain.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another sweep" trains this job
        result = cli(SWEEP, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "locked by another process; skipped" in result.stdout
    assert not (job / "metrics.json").exists() and (tmp_path / "sweep" / "optim.lr=0.05" / "metrics.json").is_file()
    assert (job / ".dltrain.lock").is_file()  # the other process's lock is left alone
    assert not (tmp_path / "sweep" / "optim.lr=0.05" / ".dltrain.lock").exists()  # the job that ran took its own away


HOLDER = """
import sys
from pathlib import Path
from dltrain.sweep.ledger import job_lock, release_job_lock
job = Path(sys.argv[1])
assert job_lock(job) is not None
print("locked", flush=True)
sys.stdin.readline()
release_job_lock(job)
print("released", flush=True)
sys.stdin.readline()
"""


def holder(job) -> subprocess.Popen:
    """Another sweep's process, holding the job's lock until told to end the job (one line on its stdin)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(job)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline() == "locked\n"
    return process


def test_a_lock_file_removed_while_another_process_waited_on_it_is_not_taken_for_the_lock(tmp_path,
                                                                                            monkeypatch) -> None:
    """The holder removes the lock file as its job ends, while it still holds the lock. A process that opened the
    old file just before must not take that file's lock as the job's: it locks the path anew, and then a third
    process finds the job locked."""
    from dltrain.sweep import ledger

    job = tmp_path / "job"
    first = holder(job)
    real_open = open

    def open_then_holder_ends_its_job(path, mode="r"):  # the interleaving: we open, the holder unlinks and closes
        handle = real_open(path, mode)
        first.stdin.write("end the job\n")
        first.stdin.flush()
        assert first.stdout.readline() == "released\n"
        monkeypatch.setattr(ledger, "open", real_open, raising=False)
        return handle

    monkeypatch.setattr(ledger, "open", open_then_holder_ends_its_job, raising=False)
    monkeypatch.setattr(ledger, "LOCKS", {})
    try:
        handle = ledger.job_lock(job)
        assert handle is not None and os.path.samestat(os.fstat(handle.fileno()), os.stat(job / ".dltrain.lock"))
        third = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from dltrain.sweep.ledger "
                                "import job_lock; print(job_lock(Path(sys.argv[1])))", str(job)],
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        assert third.stdout.strip() == "None", third.stderr  # one lock for the job, held by us
        ledger.release_job_lock(job)
        assert not (job / ".dltrain.lock").exists()
    finally:
        first.communicate("\n", timeout=30)
