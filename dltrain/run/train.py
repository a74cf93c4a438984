"""Running one job, from a checked RunConfig to metrics.json: assemble the run (assemble.py), resume it if asked,
fit, report.

`run_job` is what the CLI calls for each Hydra job; with trainer.devices > 1 it starts that many DDP
workers (each runs `train`) and waits. The parent checks what the config alone decides and builds nothing: each
worker builds the data and model once, and a problem found there (the first worker's) is one line from the parent.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from dltrain.core import checkpoint, dist, env, metrics_file
from dltrain.core.engine import State
from dltrain.core.files import write_text_atomic
from dltrain.core.registry import ConfigError, check, first_line
from dltrain.run import cluster, resume, resuming, threads
from dltrain.run.assemble import Assembled, RunComponents, assemble, pick_device
from dltrain.run.config import RunConfig
from dltrain.run.signals import stop_if_signalled


def train(config: RunConfig, run_dir: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Train one process's share of the run (all of it without DDP); rank 0 writes and returns the report."""
    trainer = config.trainer
    if trainer.deterministic:  # cuBLAS refuses deterministic mode without a fixed workspace
        env.fixed_cublas_workspace()
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.get_num_threads())
    dist.share_cores(trainer.threads)
    device = pick_device(trainer)
    device = dist.setup(device.type) or device
    if trainer.compile:
        torch.compiler.reset()  # each run of a sweep in one process compiles afresh, within dynamo's limits
    try:
        resuming = dist.all_gather_object(bool(trainer.resume))  # a re-launch resumes where the folder is seen
        check(len(set(resuming)) == 1, f"only rank(s) {[r for r, yes in enumerate(resuming) if yes]} of "
              f"{len(resuming)} see the run to resume: keep the run folder on a file system all nodes share")
        return train_on(config, run_dir, device, list(overrides))
    finally:  # a run must not change the next one in this process
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        torch.set_num_threads(saved[3])
        dist.teardown()


def train_on(config: RunConfig, run_dir: Path, device: torch.device, overrides: list[str]) -> dict[str, Any]:
    """Assemble, resume if asked, fit; rank 0 writes config.yaml and metrics.json."""
    run = open_run(config, run_dir, device, overrides)
    run.fit()
    return close_run(run, overrides)


def open_run(config: RunConfig, run_dir: Path, device: torch.device, overrides: list[str]) -> Assembled:
    """Everything before fitting: assemble, resume if asked, write config.yaml (rank 0). The vectorised launcher
    opens each member of a stack with it (run/stacked.py)."""
    run = assemble(config, run_dir, device)
    for warning in run.parts.warnings if dist.is_rank0() else []:
        print(f"dltrain: warning: {warning}", file=sys.stderr, flush=True)
    trainer = config.trainer
    changed = None
    if trainer.resume:
        saved_config = resuming.resume(run.state, run.callbacks, trainer.resume, trainer.max_epochs, config.resolved)
        changed = resume.changes(saved_config, config.resolved)
    if dist.is_rank0():  # only now: a failed resume leaves the resumed run's files as they were
        resumed = [checkpoint.checkpoint_file(trainer.resume).parent] if trainer.resume else []
        for folder in {run_dir, *resumed}:  # temp files of writes that a kill interrupted
            checkpoint.remove_orphans(folder)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config.resolved, sort_keys=False))
        resume.record(run_dir, overrides, config.project)  # what a later `trainer.resume=DIR` replays
        if changed:
            print(changed, flush=True)
    stop_if_signalled()  # a Ctrl-C that a library swallowed while the run was built (a bare `except:` on import)
    return run


def close_run(run: Assembled, overrides: list[str], **fields: Any) -> dict[str, Any]:
    """After fitting: the report, written as metrics.json by rank 0 (with `fields` added, e.g. the launcher)."""
    report = {**make_report(run.state, run.parts, overrides, run.thread_choice, run.origin), **fields}
    if dist.is_rank0():
        metrics_file.write(run.run_dir, report)
    return report


def make_report(state: State, parts: RunComponents, overrides: list[str], chosen: threads.ThreadChoice,
                origin: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: how the run ended, its best epoch, the last epoch's and the test metrics, and where the run
    came from (`origin`: plugins.run_origin's git commit and provenance)."""
    return {
        "status": metrics_file.ended_status(state.stop_reason),
        "stop_reason": state.stop_reason,
        "epochs": state.epoch,
        "monitor": state.best.monitor,
        "mode": state.best.mode,
        "best": state.best.value,
        "best_epoch": state.best.epoch,
        "final": state.metrics,  # the last epoch's metrics
        "test": state.test_metrics,
        "train_seconds": state.train_seconds,
        "samples_per_sec": state.samples_seen / state.train_seconds if state.train_seconds else None,
        "world_size": dist.world_size(),
        "threads": torch.get_num_threads(),  # intra-op CPU threads of each process (rank 0's)
        "threads_from": chosen.source,  # trainer.threads | resumed run | OMP_NUM_THREADS | rule (threads.py)
        "forward_flops_per_step": chosen.flops_per_step,  # the rule's input: one process's forward FLOPs per step
        "device": str(next(parts.model.parameters()).device),
        "overrides": overrides,
        **origin,
    }


def run_job(config: RunConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """One Hydra job: train (in N DDP workers if asked), print the summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = config.trainer
    if trainer.devices > 1 and cluster.slurm_group():
        if not dist.is_rank0():  # every task finds it; rank 0 says it
            sys.exit(2)
        raise ConfigError(f"trainer.devices={trainer.devices} but SLURM started this process as one of "
                          f"{env.world_size()} tasks, each one DDP process: use trainer.devices=1 and "
                          f"ask SLURM for the processes (srun --ntasks-per-node=N, submitit's tasks_per_node=N)")
    if trainer.devices > 1 and not dist.launched_externally():
        check_before_workers(config)
        try:
            dist.launch(trainer.devices, worker, config, str(run_dir), overrides)
        except Exception as err:
            problems = dist.reported_problems(err)  # a worker's config problem: one line here, not a failed worker
            if problems:
                raise ConfigError(*problems) from None
            raise
        report = metrics_file.load(run_dir)  # the workers' rank 0 wrote it
    else:
        try:
            report = train(config, run_dir, overrides)
        except RuntimeError as err:
            lost_peer(err, run_dir)
            raise
    if dist.is_rank0():
        print(metrics_file.summary_text(report, run_dir), flush=True)
    return report


def check_before_workers(config: RunConfig) -> None:
    """What the config alone decides, before any worker starts. The parent builds nothing: a copy of the data here
    would only add start-up time and memory (each worker builds its own and reports what it finds wrong)."""
    trainer = config.trainer
    check(config.data.batch_size >= trainer.devices, f"data.batch_size={config.data.batch_size} is smaller than "
          f"trainer.devices={trainer.devices}: each process needs a share of the global batch")
    if trainer.resume:  # the checkpoint's fit to the model is checked in the workers, which build the model
        resuming.open_resumable(trainer.resume)
    if pick_device(trainer).type == "cuda":
        check(torch.cuda.device_count() >= trainer.devices, f"trainer.devices={trainer.devices} but only "
              f"{torch.cuda.device_count()} GPU(s) are visible")


def lost_peer(err: RuntimeError, run_dir: Path) -> None:
    """Under an external launcher (torchrun, SLURM) a process whose peer died fails in its next collective (gloo:
    connection reset; nccl: a DistBackendError): one line and exit 1 instead of a traceback in every process."""
    text = str(err)
    if not dist.launched_externally() or not (isinstance(err, torch.distributed.DistError) or "gloo" in text):
        return
    saved = f"; resume with: {resume.command(run_dir)}" if (run_dir / "last.pt").is_file() else ""
    print(f"dltrain: error: rank {dist.launch_rank()} lost a process of its DDP group ({first_line(err)}){saved}",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)  # a normal exit can hang in the broken group's C++ teardown; every saved file is already whole


def worker(config: RunConfig, run_dir: str, overrides: list[str]) -> None:
    """Entry point of each DDP worker process (module level so that spawn can pickle it). The parent's plugins
    (the user's own components) are imported again here: a spawned process starts with the built-ins only."""
    dist.leave_if_orphaned()
    from dltrain.core.exiting import skip_teardown_at_exit
    from dltrain.run import plugins

    skip_teardown_at_exit()  # a worker's exit without torch's slow teardown (~0.6 s)
    try:
        plugins.load(list(config.plugins), Path(config.project) if config.project else None)
        train(config, Path(run_dir), overrides)
    except ConfigError as err:  # the parent prints it once; the agent stops the other workers
        dist.report_to_parent(err.problems)
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal: the parent reports it, once
        os._exit(130)
    except Exception as err:  # noqa: BLE001  (ended here: torch's wrapper would leave a pickle in /tmp)
        dist.worker_crashed(err)
