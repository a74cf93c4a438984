"""Distributed data parallel: start N local workers with torch's elastic launcher (what torchrun uses),
or join a group that an external `torchrun` (or SLURM, see cluster.py) set up in the environment. gloo on CPU,
nccl on GPU. Each of several processes on one machine takes its share of the cores.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import torch
import torch.distributed as torch_dist

from dltrain.core import env
from dltrain.core.env import is_rank0, launched_externally  # noqa: F401  (re-exported: users look for them here)


def is_initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    """This process's rank in the joined group, what it shards by (with `world_size`); 0 without one."""
    return torch_dist.get_rank() if is_initialized() else 0


launch_rank = env.rank  # the rank a launcher gave this process, also before the group is joined or after it is left


def world_size() -> int:
    return torch_dist.get_world_size() if is_initialized() else 1


is_main = is_rank0  # whether this process writes files and prints for its group (the docs' name: dltrain.dist)


def setup(device_type: str) -> torch.device | None:
    """Join the process group from the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT); returns the
    device of this process's local rank on CUDA, None on CPU. No-op for a single process."""
    if not launched_externally() or is_initialized():
        return None
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = env.local_rank()
    device = None
    if device_type == "cuda":  # SLURM's --gpus-per-task shows each task only its own GPU: index 0 there
        device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    torch_dist.init_process_group(backend=backend, device_id=device)
    return device


def teardown() -> None:
    if is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if is_initialized():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list without a group)."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def cores_per_process() -> int:
    """The cores this process may use: SLURM's cpus-per-task where SLURM gave each task its own, otherwise an
    equal share of the cores it may run on among this machine's processes that train side by side (DDP workers,
    LOCAL_WORLD_SIZE: our launcher, torchrun, SLURM; times the sweep jobs that a launcher runs at once)."""
    return env.slurm_cpus_per_task() or max(1, len(os.sched_getaffinity(0)) // env.processes_here())


def share_cores(threads: int | None) -> None:
    """This process's intra-op CPU threads while it builds the run (threads.py picks those it trains with):
    `threads` when given; otherwise, when several processes of this machine train side by side and
    OMP_NUM_THREADS is not set, its share of the cores. torch's default, all cores in every process,
    oversubscribes them: 2 workers on 2 cores took 6x longer per epoch (bench/)."""
    if threads is None and (env.processes_here() <= 1 or env.omp_threads_set()):
        return
    torch.set_num_threads(threads or cores_per_process())


REPORTED = 2  # a worker's exit code after handing its config problems to the parent, which prints them once


def report_to_parent(problems: list[str]) -> NoReturn:
    """In a worker of `launch`: hand config problems to the parent through torch's per-worker error file (the
    parent's ChildFailedError carries it) and exit; the agent stops the other workers."""
    path = env.error_file()
    if path:
        with open(path, "w") as out:
            json.dump({"message": json.dumps({"problems": problems}), "timestamp": int(time.time())}, out)
    sys.exit(REPORTED)


def reported_problems(err: BaseException) -> list[str]:
    """The config problems a failed launch's workers reported (`report_to_parent`), lowest rank first; [] if none."""
    for failure in sorted(getattr(err, "failures", {}).values(), key=lambda f: f.local_rank):
        try:
            if failure.exitcode == REPORTED:
                return list(json.loads(failure.message)["problems"])
        except (TypeError, ValueError, KeyError):
            continue
    return []


LOST_PEER = 75  # a worker's exit code when its group broke because another worker died first (that one is named)


def worker_failure(failures: list[Any], where: str) -> str:
    """The workers that failed first: not those that only lost their group because a peer died (dist.LOST_PEER). A
    worker killed by a signal (SIGKILL: often the out-of-memory killer) printed nothing to point to."""
    import signal

    causes = sorted([f for f in failures if f.exitcode != LOST_PEER] or failures, key=lambda f: f.local_rank)
    named = []
    for f in causes:
        if f.exitcode == LOST_PEER:
            named.append(f"rank {f.local_rank} lost its group")
        elif f.exitcode < 0:
            named.append(f"rank {f.local_rank} killed by {signal.Signals(-f.exitcode).name}"
                         if -f.exitcode in signal.valid_signals() else f"rank {f.local_rank} signal {-f.exitcode}")
        else:
            named.append(f"rank {f.local_rank} exit code {f.exitcode}")
    output = any(f.exitcode > 0 and f.exitcode != LOST_PEER for f in causes)
    return (f"a DDP worker failed ({', '.join(named)}); the run was stopped"
            + (f", see the worker's output {where}" if output else ""))


def leave_if_orphaned() -> None:
    """In a worker of `launch`, before anything else: a parent killed (SIGKILL) while this worker started up sent it
    no signal (torch asks for SIGINT on the parent's death only once the worker runs), and the worker would wait
    for the dead parent's rendezvous for minutes: it ends here, quietly."""
    if env.orphaned():
        os._exit(130)


def worker_crashed(err: BaseException) -> NoReturn:
    """In a worker of `launch`: a crash ends the worker here rather than in torch's spawn wrapper, which pickles the
    traceback to a /tmp/pytorch-errorfile-*.pickle that nothing removes. A group broken by a peer that died first
    (gloo: connection closed; nccl: a DistError) exits quietly with LOST_PEER, after the agent had time to see the
    peer's death first: the parent's line names the peer.
    Any other error prints its traceback, the worker's output that the parent's line points to."""
    import traceback

    lost = isinstance(err, torch_dist.DistError) or "gloo" in str(err)
    if lost:  # the agent reports the first exit it sees: let it see the peer's (it checks every 0.1 s), then stop us
        with contextlib.suppress(KeyboardInterrupt):  # the parent's death (SIGINT) ends the wait: exit below
            time.sleep(2.0)
    else:
        traceback.print_exception(err)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(LOST_PEER if lost else 1)  # a normal exit can hang in a broken group's C++ teardown


class _ErrorFilesOnly:
    """torch elastic's logs spec (the interface of its LogsSpecs: reify, root_log_dir) without a log folder
    (DefaultLogsSpecs makes one per launch, which a killed parent leaves in /tmp): the workers write to the terminal,
    and each one's error file is a path in the temp folder that exists only from a worker's `report_to_parent`
    until `launch` has read it."""

    def __init__(self, stem: str) -> None:
        self.stem = stem

    def reify(self, envs: dict[int, dict[str, str]]) -> Any:
        from torch.distributed.elastic.multiprocessing.api import LogsDest

        files = {rank: f"{self.stem}-{rank}.json" for rank in envs}
        for rank, worker_env in envs.items():
            worker_env["TORCHELASTIC_ERROR_FILE"] = files[rank]
        return LogsDest(stdouts=dict.fromkeys(envs, ""), stderrs=dict.fromkeys(envs, ""), error_files=files)

    @property
    def root_log_dir(self) -> str:
        return os.path.dirname(self.stem)


class _Reported(logging.Filter):
    """The agent logs each failed worker with a traceback of its own: dltrain reports a failed launch in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("failed (exitcode")


def quiet_agent() -> None:
    """The agent's warnings (shutting down workers on a signal, a failed worker) would wrap our one-line report; and
    a parent killed with SIGKILL leaves the agent's 9 semaphores to multiprocessing's resource tracker, which removes
    them with a warning that is only noise: the tracker (one per process, started here) runs with that warning off."""
    from multiprocessing import resource_tracker

    for name in [*logging.root.manager.loggerDict, "torch.multiprocessing.spawn"]:  # torch sets each module's level
        if name.startswith(("torch.distributed.elastic", "torch.multiprocessing")):
            logging.getLogger(name).setLevel(logging.ERROR)
    agent = logging.getLogger("torch.distributed.elastic.multiprocessing.api")
    if not any(isinstance(f, _Reported) for f in agent.filters):
        agent.addFilter(_Reported())
    option = "ignore:resource_tracker:UserWarning"  # -W for the tracker's interpreter, which takes sys.warnoptions
    sys.warnoptions.append(option)
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove(option)


def launch(nprocs: int, entrypoint: Callable[..., Any], *args: Any) -> None:
    """Run entrypoint(*args) in `nprocs` local worker processes and wait; a worker that fails fails all
    (torch's ChildFailedError), with no restarts, so nothing hangs on a dead peer. Nothing is left in the temp
    folder: no log folder (torch's default leaves a /tmp/torchelastic_* each), and the workers' error files, which
    exist only when a worker reported, are removed here."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    quiet_agent()
    env.mark_ddp_parent()
    stem = os.path.join(tempfile.gettempdir(), f"dltrain-ddp-{uuid.uuid4().hex}")  # unguessable: files only
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0",  # port 0: a free port, no collisions
                          max_restarts=0, monitor_interval=0.1, start_method="spawn",  # 0.1 s: torchrun's default
                          logs_specs=_ErrorFilesOnly(stem))
    try:
        elastic_launch(config, entrypoint)(*args)
    finally:  # the failures (ChildFailedError) have read them
        for rank in range(nprocs):
            with contextlib.suppress(OSError):
                os.unlink(f"{stem}-{rank}.json")
