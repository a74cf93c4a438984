"""Distributed data parallel: start N local workers with torch's elastic launcher (what torchrun uses),
or join a group that an external `torchrun` set up in the environment. gloo on CPU, nccl on GPU.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as torch_dist


def is_initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    """This process's rank in the joined group; 0 without one."""
    return torch_dist.get_rank() if is_initialized() else 0


def launch_rank() -> int:
    """The rank a launcher gave this process (RANK), also before the group is joined or after it is left."""
    return torch_dist.get_rank() if is_initialized() else int(os.environ.get("RANK", "0")) * launched_externally()


def world_size() -> int:
    return torch_dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def launched_externally() -> bool:
    """True inside a process that torchrun (or our own launcher) started as part of a group."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_type: str) -> torch.device | None:
    """Join the process group from the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT); returns the
    device of this process's local rank on CUDA, None on CPU. No-op for a single process."""
    if not launched_externally() or is_initialized():
        return None
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = None
    if device_type == "cuda":
        device = torch.device("cuda", local_rank)
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


def launch(nprocs: int, entrypoint: Callable[..., Any], *args: Any) -> None:
    """Run entrypoint(*args) in `nprocs` local worker processes and wait; a worker that fails fails all
    (torch's ChildFailedError), with no restarts, so nothing hangs on a dead peer."""
    import logging

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # the agent's own warnings (shutting down workers on a signal, a failed worker) would wrap our one-line report
    for name in list(logging.root.manager.loggerDict):  # torch sets each module's logger level itself
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.ERROR)

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0",  # port 0: a free port, no collisions
                          max_restarts=0, monitor_interval=0.5, start_method="spawn")
    elastic_launch(config, entrypoint)(*args)
