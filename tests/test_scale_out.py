"""Scaling out: SLURM's tasks form one DDP group (two local processes given SLURM's variables by hand), each of
several local processes takes its share of the cores, SIGUSR1 stops a run like SIGTERM, torchrun's nodes share one
run folder (a re-launch with the same id resumes or refuses, never overwrites), and no temp folder is left behind."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dltrain.core import checkpoint
from dltrain.run.cluster import adopt_slurm, first_host, tasks_on_this_node
from dltrain.run.threads import auto_threads
from tests.conftest import run
from tests.test_dist import SAME
from tests.test_signals import start_and_signal

BIN = Path(sys.executable).parent
CORES = len(os.sched_getaffinity(0))


def slurm_env(rank: int, job: int, tasks: int = 2) -> dict[str, str]:
    """What srun gives task `rank` of a one-node step (torchrun's variables removed, as in a fresh task)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID",
                                                            "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")}
    return {**env, "SLURM_JOB_ID": str(job), "SLURM_STEP_ID": "0", "SLURM_NTASKS": str(tasks),
            "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
            "SLURM_TASKS_PER_NODE": str(tasks), "PYTHONUNBUFFERED": "1"}


def start_tasks(args: list[str], cwd: Path, job: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([str(BIN / "dltrain"), *args], cwd=cwd, env=slurm_env(rank, job), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in range(2)]


def test_slurm_tasks_train_one_run_equal_to_one_process(tmp_path) -> None:
    single = run(SAME, tmp_path / "one")
    job = random.randrange(10**6)
    tasks = start_tasks(SAME, tmp_path, job)
    results = [task.communicate(timeout=300) for task in tasks]
    assert [t.returncode for t in tasks] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert os.listdir(tmp_path / "outputs") == [f"slurm-{job}.0"]  # one run, named by the job and step
    run_dir = tmp_path / "outputs" / f"slurm-{job}.0"
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["world_size"] == 2 and report["threads"] == \
        auto_threads(report["forward_flops_per_step"], max(1, CORES // 2))
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert abs(single["final"]["val/loss"] - report["final"]["val/loss"]) < 1e-5
    assert abs(single["test"]["test/acc"] - report["test"]["test/acc"]) < 1e-9
    a, b = checkpoint.load(tmp_path / "one" / "last.pt")["model"], checkpoint.load(run_dir / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)  # up to float reduction order
    assert results[0][0].count("best val/loss") == 1 and "best val/loss" not in results[1][0]  # rank 0 reports

    again = start_tasks(SAME, tmp_path, job)  # a re-launch of the same step: refused, the finished run kept
    errors = [task.communicate(timeout=300)[1] for task in again]
    assert [t.returncode for t in again] == [2, 2]
    assert errors[0].strip().startswith(f"dltrain: error: {Path('outputs') / f'slurm-{job}.0'} already holds a "
                                        "finished run") and errors[1] == ""
    assert json.loads((run_dir / "metrics.json").read_text()) == report


def test_killing_one_slurm_task_ends_the_other(tmp_path) -> None:
    job = random.randrange(10**6)
    tasks = start_tasks([*SAME, "trainer.max_epochs=500", "early_stopping=none"], tmp_path, job)
    deadline = time.monotonic() + 240
    while not (tmp_path / "outputs" / f"slurm-{job}.0" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    tasks[1].kill()
    _, err = tasks[0].communicate(timeout=120)  # bounded: the next all-reduce fails, nothing waits for a timeout
    tasks[1].communicate()
    assert tasks[0].returncode == 1, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltrain: error: rank 0 lost a process of its DDP group"), err
    assert "resume with: dltrain trainer.resume=" in lines[0]


def test_slurm_tasks_take_one_process_each(tmp_path) -> None:
    job = random.randrange(10**6)
    tasks = start_tasks([*SAME, "trainer.devices=2"], tmp_path, job)
    errors = [task.communicate(timeout=300)[1] for task in tasks]
    assert [t.returncode for t in tasks] == [2, 2] and errors[1] == ""
    assert errors[0].strip().splitlines() == ["dltrain: error: trainer.devices=2 but SLURM started this process as "
                                              "one of 2 tasks, each one DDP process: use trainer.devices=1 and ask "
                                              "SLURM for the processes (srun --ntasks-per-node=N, submitit's "
                                              "tasks_per_node=N)"]
    assert not (tmp_path / "outputs" / f"slurm-{job}.0").exists()  # nothing written


def test_only_a_step_of_several_tasks_is_a_group() -> None:
    step = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "3", "SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0",
            "SLURM_NODEID": "1", "SLURM_NODELIST": "gpu[07-08],cpu1", "SLURM_TASKS_PER_NODE": "2(x2)"}
    env = dict(step)
    assert adopt_slurm(env)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")} == \
        {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu07"}
    assert 10000 <= int(env["MASTER_PORT"]) < 30000
    salloc = {k: v for k, v in step.items() if k not in ("SLURM_STEP_ID", "SLURM_PROCID")}  # a shell, no step
    one_task = {**step, "SLURM_NTASKS": "1"}
    under_torchrun = {**step, "RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}
    for env in (salloc, one_task, under_torchrun):
        before = dict(env)
        assert not adopt_slurm(env) and env == before
    assert first_host("node[01-03,07],gpu5") == "node01" and first_host("rack[2-3]-n[4,6]") == "rack2-n4"
    assert first_host("localhost") == "localhost" and first_host("a1,b2") == "a1"
    assert tasks_on_this_node({"SLURM_TASKS_PER_NODE": "3(x2),1", "SLURM_NODEID": "2"}) == 1


def test_sigusr1_stops_a_run_like_sigterm(tmp_path) -> None:
    result, _ = start_and_signal(tmp_path, signal.SIGUSR1)
    assert result.returncode == 143, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltrain: interrupted at epoch "), result.stderr
    assert "resume with: dltrain trainer.resume=" in lines[0] and (tmp_path / "run" / "last.pt").is_file()


def test_ddp_workers_share_the_cores_and_leave_no_temp_folder(tmp_path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"}
    args = [*SAME, "trainer.max_epochs=1", "trainer.devices=2"]
    automatic = subprocess.run([str(BIN / "dltrain"), *args, "hydra.run.dir=auto"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=300, env={**os.environ, **env})
    assert automatic.returncode == 0, automatic.stderr[-2000:]
    auto_report = json.loads((tmp_path / "auto" / "metrics.json").read_text())  # the rule on each worker's share
    assert auto_report["threads"] == auto_threads(auto_report["forward_flops_per_step"], max(1, CORES // 2))
    assert [p.name for p in scratch.iterdir() if p.name.startswith(("torchelastic_", "dltrain-"))] == []
    # trainer.threads set by hand overrides the share: tests/test_dist.py's batch-norm DDP run checks it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args: list[str], rdzv_id: str, cwds: tuple[Path, Path]) -> list[subprocess.CompletedProcess]:
    """Two torchrun agents on this machine as two nodes of one process each, started at once."""
    port = free_port()
    agents = [subprocess.Popen([str(BIN / "torchrun"), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                                f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={rdzv_id}",
                                f"--log-dir={cwd.parent / f'logs-{i}'}", str(BIN / "dltrain"), *args],
                               cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for i, cwd in enumerate(cwds)]
    outputs = [a.communicate(timeout=300) for a in agents]
    return [subprocess.CompletedProcess(a.args, a.returncode, *out) for a, out in zip(agents, outputs)]


@pytest.mark.slow
def test_torchrun_nodes_share_one_run_folder_and_a_relaunch_never_overwrites(tmp_path) -> None:
    shared, other = tmp_path / "shared", tmp_path / "other"
    shared.mkdir(), other.mkdir()
    rdzv = f"job{random.randrange(10**6)}"
    first = two_nodes(SAME, rdzv, (shared, other))  # node 1 with a file system of its own
    assert [r.returncode for r in first] == [0, 0], first[0].stderr[-2000:] + first[1].stderr[-2000:]
    run_dir = shared / "outputs" / f"torchrun-{rdzv}"
    assert json.loads((run_dir / "metrics.json").read_text())["world_size"] == 2
    assert list(other.iterdir()) == []  # rank 1 made no folder
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1

    again = two_nodes(SAME, rdzv, (shared, shared))  # the same id: a finished run is refused on every rank
    assert all(r.returncode != 0 for r in again)
    assert f"dltrain: error: outputs/torchrun-{rdzv} already holds a finished run" in again[0].stderr + again[1].stderr
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1

    (run_dir / "metrics.json").unlink()  # as if killed after its last checkpoint: the same id resumes it
    resumed = two_nodes(SAME, rdzv, (shared, shared))
    assert [r.returncode for r in resumed] == [0, 0], resumed[0].stderr[-2000:]
    assert f"holds an interrupted run of torchrun-{rdzv}; resuming it" in resumed[0].stderr + resumed[1].stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
