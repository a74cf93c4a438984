"""Real multi-process DDP (gloo on CPU): the same global batch gives the same trajectory."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dltrain.core import checkpoint
from dltrain.run.assemble import build, make_optimizer, make_settings
from tests.conftest import parse, run

SAME = ["model.hidden=[32,16]", "optim=sgd", "optim.lr=0.2", "data.batch_size=50", "trainer.max_epochs=2",
        "trainer.log_every_n_steps=7", "trainer.device=cpu"]


@pytest.mark.parametrize("extra", [[], ["+data.augment.flip=true", "+data.augment.crop_padding=1"]],
                         ids=["plain", "augmented"])
def test_two_processes_equal_one(tmp_path, extra: list[str]) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    single = run([*SAME, *extra], one)
    double = run([*SAME, *extra, "trainer.devices=2"], two)
    assert double["world_size"] == 2 and single["world_size"] == 1
    a, b = checkpoint.load(one / "last.pt")["model"], checkpoint.load(two / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)  # up to float reduction order
    assert abs(single["final"]["val/loss"] - double["final"]["val/loss"]) < 1e-5
    assert abs(single["test"]["test/acc"] - double["test"]["test/acc"]) < 1e-9
    assert sorted(p.name for p in two.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]
    assert len(list(two.glob("events.out.tfevents.*"))) == 1  # only rank 0 logs


def left_in(scratch: Path) -> list[str]:
    """What the processes left in their TMPDIR, less torch's per-user compile cache (made by any torch process, a
    single-process run too, and reused, not one per run)."""
    return sorted(p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_"))


def spawned_workers(parent: int) -> list[str]:
    """The pids of a DDP parent's workers (multiprocessing's spawned children, not its resource tracker)."""
    import subprocess

    children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return [pid for pid in children if b"spawn_main" in read_or_empty(Path(f"/proc/{pid}/cmdline"))]


def read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_a_killed_worker_or_parent_is_one_line_and_leaves_nothing(tmp_path) -> None:
    """Rank 1 killed mid-run (SIGKILL, as by the out-of-memory killer): one line naming it, the resume command, and
    nothing in the temp folder (torch's agent logged 7 lines first; rank 0's broken collective left a
    pytorch-errorfile-*.pickle). The resumed run's parent killed while its workers start up: they end at once (they
    waited minutes for the dead parent's rendezvous), no word (the resource tracker warned of 9 leaked semaphores)
    and nothing left (a dltrain-ddp-* folder was)."""
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    args = [*SAME, "trainer.max_epochs=50", "early_stopping=none", "trainer.devices=2", "hydra.run.dir=run"]
    code = "import tests.faults as f; f.dead_worker_cli()"  # rank 1 is killed once epoch 1 is saved
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == ["dltrain: error: a DDP worker failed (rank 1 killed by SIGKILL); the run "
                                          f"was stopped; resume with: dltrain trainer.resume={tmp_path / 'run'}"]
    assert checkpoint.load(tmp_path / "run" / "last.pt")["epoch"] < 50  # stopped, resumable
    assert left_in(scratch) == []

    parent = subprocess.Popen([str(Path(sys.executable).parent / "dltrain"), *args, "trainer.resume=run"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while len(workers := spawned_workers(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the workers import torch: the parent's death sends them no signal yet
    parent.kill()
    _, err = parent.communicate(timeout=90)  # the workers and the resource tracker hold the pipe until they end
    assert err == "" and len(workers) == 2
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert left_in(scratch) == []


def test_the_failed_worker_line_names_the_cause_first() -> None:
    """Torch's failure records as the agent makes them: a worker that only lost its group is named only when no
    other failed; a signal by name; 'see the output' only for a worker that could print one."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from dltrain.core.dist import LOST_PEER, worker_failure

    def failed(rank: int, code: int) -> ProcessFailure:
        return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=code, error_file="<N/A>")

    assert worker_failure([failed(0, LOST_PEER), failed(1, -9)], "above") == \
        "a DDP worker failed (rank 1 killed by SIGKILL); the run was stopped"
    assert worker_failure([failed(1, 1)], "in run/dltrain.log") == \
        "a DDP worker failed (rank 1 exit code 1); the run was stopped, see the worker's output in run/dltrain.log"
    assert worker_failure([failed(0, LOST_PEER)], "above") == "a DDP worker failed (rank 0 lost its group); the run " \
        "was stopped"


def test_external_torchrun_joins_the_group_and_shares_one_run_dir(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).parent / "torchrun"
    dltrain = Path(sys.executable).parent / "dltrain"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(dltrain), *SAME],
                            cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dirs = list((tmp_path / "outputs").iterdir())
    assert len(run_dirs) == 1  # not one per rank
    report = json.loads((run_dirs[0] / "metrics.json").read_text())
    assert report["world_size"] == 2
    assert result.stdout.count("best val/loss") == 1  # only rank 0 prints the summary


def test_batch_norm_drops_a_last_batch_too_small_to_share(tmp_path) -> None:
    """1078 train samples at batch 359 leave a last batch of 1 (1078 = 3*359 + 1), too small to give each of 2
    processes the 2 samples batch norm needs: it is dropped, and a per-step cosine counts only the steps taken.
    trainer.threads set by hand is each worker's, not the automatic share (tests/test_scale_out.py checks that)."""
    overrides = ["model.batch_norm=true", "data.batch_size=359", "trainer.max_epochs=1", "trainer.devices=2",
                 "trainer.log_every_n_steps=0", "sched=cosine", "sched.interval=step", "sched.min_lr=0.01",
                 "trainer.threads=3"]
    report = run(overrides, tmp_path)
    assert report["status"] == "completed" and report["world_size"] == 2 and report["threads"] == 3
    saved = checkpoint.load(tmp_path / "last.pt")
    assert saved["step"] == 3
    parts = build(parse(overrides))
    lr_at = make_settings(parts, len(parts.data.train), make_optimizer(parts)[1]).lr_at
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr_at(2))  # the last step's lr
    assert lr_at(2) > 0.01 + 1e-3 and lr_at(3) == pytest.approx(0.01)  # min_lr exactly at the run's end


def test_resume_under_ddp_gives_each_rank_its_own_random_stream(tmp_path) -> None:
    """With dropout, an interrupted and resumed 2-process run ends where the uninterrupted one does."""
    dropout = [*SAME, "model.dropout=0.3", "trainer.devices=2"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run([*dropout, "trainer.max_epochs=3"], straight)
    run([*dropout, "trainer.max_epochs=1"], interrupted)
    run([*dropout, "trainer.max_epochs=3", f"trainer.resume={interrupted}"], interrupted)
    a, b = checkpoint.load(straight / "last.pt"), checkpoint.load(interrupted / "last.pt")
    assert len(a["rng"]) == 2 and not torch.equal(a["rng"][0]["torch"], a["rng"][1]["torch"])
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
