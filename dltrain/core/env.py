"""The one place that reads and writes environment variables. Within one process, state goes down by argument;
the environment carries only what must cross into another process: DDP workers that torch spawns, launcher
subprocesses (joblib, submitit), SLURM's tasks, and what torchrun or SLURM hand to us. Also the process's rank
(`is_rank0`: who writes files and prints for a group) and the few library switches we read or set (OMP, cuBLAS,
NO_COLOR, shell completion). Standard library only: the sweep's parent and `dltrain --help` import no torch.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

# ours, each set by one writer for processes it starts (read back in those processes)
PROJECT = "DLTRAIN_PROJECT"  # the project's root folder (cli): launcher subprocesses and DDP workers
SWEEP = "DLTRAIN_SWEEP"  # JSON {root, jobs, width, monitor, test} of the sweep (sweep.plan.start): the jobs' processes
JOBS = "DLTRAIN_JOBS"  # the folder where every sweep job records how it ended (sweep.ledger.listening)
SWEEP_PROCESS = "DLTRAIN_SWEEP_PROCESS"  # host:pid of the sweep's own process: jobs in it print their line themselves
PARALLEL_JOBS = "DLTRAIN_PARALLEL_JOBS"  # sweep jobs a launcher runs at once on this machine: for the DDP workers
DDP_PARENT = "DLTRAIN_DDP_PARENT"  # the pid of dist.launch's process, inherited by its workers
SLURM_GROUP = "DLTRAIN_SLURM_GROUP"  # "1" in the tasks whose group cluster.adopt_slurm set up
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")
COMPLETING = "_DLTRAIN_COMPLETE"  # set by the shell's completion script (typer's, dltrain --install-completion)


def on_environment(function: Callable[[MutableMapping[str, str]], bool]) -> bool:
    """`function` (cluster.slurm_group, adopt_slurm & co., which work on any mapping: tests pass dicts) applied to
    this process's environment: SLURM's or submitit's variables read, and torchrun's set where torch reads them."""
    return function(os.environ)


# ---- the process's place in a DDP group (torchrun, our own launcher, SLURM's or submitit's tasks) -------------

def world_size() -> int:
    """The processes of the group a launcher started this one in (WORLD_SIZE); 1 outside one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_externally() -> bool:
    """True inside a process that torchrun (or our own launcher, or SLURM's tasks) started as part of a group."""
    return world_size() > 1


def rank() -> int:
    """This process's rank: the joined group's, else the one a launcher gave it (RANK), else 0."""
    dist = sys.modules.get("torch.distributed")  # never imported here: the light paths stay without torch
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched_externally() else 0


def is_rank0() -> bool:
    """Whether this process writes the files and prints the lines of its group (every process outside a group)."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def processes_here() -> int:
    """This machine's processes that train side by side: DDP workers (LOCAL_WORLD_SIZE) times the sweep jobs a
    launcher runs at once."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) * int(os.environ.get(PARALLEL_JOBS, "1"))


def slurm_cpus_per_task() -> int | None:
    """SLURM's cpus-per-task, where SLURM gave each task of our group its own cores."""
    per_task = os.environ.get("SLURM_CPUS_PER_TASK") if os.environ.get(SLURM_GROUP) == "1" else None
    return max(1, int(per_task)) if per_task else None


def launch_name() -> str | None:
    """The id every process of this launch shares: `slurm-<job>.<step>` or `torchrun-<rendezvous id>`."""
    if os.environ.get(SLURM_GROUP) == "1":
        return f"slurm-{os.environ.get('SLURM_JOB_ID', '0')}.{os.environ.get('SLURM_STEP_ID', '0')}"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id:
        return None
    if run_id == "none":  # torchrun's default id: the local ranks' shared parent (the agent) tells launches apart
        run_id = f"{os.environ.get('MASTER_PORT', '')}-{os.getppid()}"
    return f"torchrun-{run_id}"


def error_file() -> str | None:
    """torch elastic's per-worker error file (TORCHELASTIC_ERROR_FILE), where a worker hands its problems up."""
    return os.environ.get("TORCHELASTIC_ERROR_FILE")


def mark_ddp_parent() -> None:
    os.environ[DDP_PARENT] = str(os.getpid())  # the workers, spawned, inherit the environment as it is now


def orphaned() -> bool:
    """In a worker of dist.launch: its parent died before it (it was re-parented)."""
    return os.environ.get(DDP_PARENT) not in (None, str(os.getppid()))


def set_parallel_jobs(count: int) -> None:
    os.environ[PARALLEL_JOBS] = str(count)


# ---- library switches ------------------------------------------------------------------------------------------

def omp_threads() -> int | None:
    """OMP_NUM_THREADS when set to a positive number."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def omp_threads_set() -> bool:
    return "OMP_NUM_THREADS" in os.environ


def fixed_cublas_workspace() -> None:
    """cuBLAS refuses deterministic mode without a fixed workspace (a value the user set stays)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def no_color() -> None:
    """colorlog (Optuna's log lines) colours whatever the stream unless NO_COLOR is set (no-color.org)."""
    os.environ.setdefault("NO_COLOR", "1")


def completing() -> bool:
    return COMPLETING in os.environ


def completion_line(name: str) -> str:
    return os.environ.get(name, "")


def word_breaks() -> str:
    return os.environ.get("COMP_WORDBREAKS", "")


# ---- what crosses into a sweep's or a run's other processes ----------------------------------------------------

def set_project(root: Path | None) -> None:
    os.environ[PROJECT] = str(root) if root else ""


def project() -> Path | None:
    """The project folder the CLI found for this command (inherited by launcher processes and DDP workers)."""
    found = os.environ.get(PROJECT)
    return Path(found) if found else None


def set_sweep(plan: dict[str, Any]) -> None:
    os.environ[SWEEP] = json.dumps(plan)


def sweep() -> dict[str, Any]:
    """What the jobs of a sweep need of its plan ({} outside a sweep)."""
    try:
        found = json.loads(os.environ.get(SWEEP) or "{}")
        return found if isinstance(found, dict) else {}
    except ValueError:
        return {}


def set_ledger(folder: Path, process: str) -> None:
    os.environ[JOBS], os.environ[SWEEP_PROCESS] = str(folder), process


def ledger() -> tuple[str | None, str | None]:
    """The sweep's ledger folder and the sweep's own process (host:pid); None, None outside a sweep."""
    return os.environ.get(JOBS) or None, os.environ.get(SWEEP_PROCESS)
