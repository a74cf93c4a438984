"""One Hydra job (one run, or one point of a sweep): parse the config at the door, train, report: its wall time,
its failure record, or the one-line report of a signal that stopped it (dltrain/signals.py)."""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dltrain.core.env import is_rank0
from dltrain.sweep.command_line import CommandLine, JobContext
from dltrain.sweep.job_failures import failure_of, signalled

Job = tuple[Path, str, int, dict[str, Any]]  # a sweep's job: its folder, name, number, and the plan (for_jobs)


def job_function(line: CommandLine) -> Callable[[Any], Any]:
    """The function Hydra calls for each job, with what the job needs of the command line by closure (a launcher
    pickles it, closure and all, into the processes it runs jobs in); the vectorised launcher reads `.context`."""
    context = JobContext(line.project, line.sweep.for_jobs() if line.sweep else {}, tuple(line.given))

    def job(cfg: Any) -> Any:
        return hydra_job(cfg, context)

    job.context = context  # type: ignore[attr-defined]
    return job


def hydra_job(cfg: Any, context: JobContext) -> Any:
    """One job (one sweep point with -m). In a sweep the job's own output goes to its dltrain.log and the terminal
    gets one line as it ends."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dltrain.core.exiting import skip_teardown_at_exit
    from dltrain.run.signals import on_signal_raise_interrupt

    skip_teardown_at_exit()  # a launcher's worker process (joblib, submitit) too: a quick exit (~0.6 s)
    on_signal_raise_interrupt()  # from here a signal is the job's one line (epoch reached, how to resume)
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        join_launcher_tasks(hydra_cfg, context.sweep)
    run_dir, overrides, worst, job = job_of(hydra_cfg, cfg, context.sweep)
    skipped = skipped_job(job, is_rank0()) if job else None
    if skipped is not None:
        return sweep_value(skipped, worst)
    try:
        return trained_value(cfg, run_dir, overrides, job, context.project, worst)
    finally:  # the job has ended, whichever way: its folder is free for a later run of the sweep
        from dltrain.sweep.ledger import release_job_lock

        release_job_lock(run_dir)


def job_of(hydra_cfg: Any, cfg: Any, sweep: dict[str, Any]) -> tuple[Path, list[str], float, Job | None]:
    """The job as Hydra set it up: its folder, its overrides as given, its worst value for the sweeper, and (in a
    sweep) its folder, name, number and the sweep's plan, as its line and record need them."""
    from hydra.types import RunMode

    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job = (run_dir, job_name(hydra_cfg, run_dir), int(hydra_cfg.job.num), sweep) if multirun else None
    return run_dir, given_overrides(hydra_cfg), worst_value(hydra_cfg.sweeper, cfg), job


def trained_value(cfg: Any, run_dir: Path, overrides: list[str], job: Job | None, project: Path | None,
                  worst: float) -> Any:
    """Train the job and return its value for the sweeper; a failure is reported (one line, or the job's record
    in a sweep) and a signal stops it with the resume line."""
    import time

    from dltrain.run.signals import deferred, interrupted
    from dltrain.sweep.plan import job_ended

    started, multirun = time.monotonic(), job is not None
    try:
        with deferred():  # torch's import: this process's one-off cost, not the job's wall time
            import dltrain.run.train  # noqa: F401

        started = time.monotonic()
        report = with_wall_time(run_dir, train_job(cfg, run_dir, overrides, project, multirun), time.monotonic() - started)
        if job:
            job_ended(*job, report, report["wall_seconds"])
        return sweep_value(report, worst)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Terminated)
        interrupted(err, run_dir, cfg.trainer.max_epochs, multirun)
    except Exception as err:  # noqa: BLE001  (a crashed trial must not kill the sweep)
        if signalled(err):  # a signal that a library turned into its own error, or the DDP launcher stopping
            interrupted(err, run_dir, cfg.trainer.max_epochs, multirun)
        failure = failure_of(err, run_dir, cfg.trainer.max_epochs, multirun)
        if failure is None:
            raise
        job_failed(failure[0], run_dir, overrides, job, code=failure[1], seconds=time.monotonic() - started)
    return worst


def join_launcher_tasks(hydra_cfg: Any, sweep: dict[str, Any]) -> None:
    """The job's tasks (submitit's tasks_per_node/nodes) form one DDP group; rank 0 reports for it. The job and its
    DDP workers learn how many jobs share this machine's cores."""
    from dltrain.core.env import set_parallel_jobs
    from dltrain.run.cluster import adopt_launcher_tasks

    adopt_launcher_tasks()
    set_parallel_jobs(parallel_jobs(hydra_cfg, sweep))


def given_overrides(hydra_cfg: Any) -> list[str]:
    """The job's overrides as given: reading them through OmegaConf would resolve a ${...} in them (and fail)."""
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task)]


def skipped_job(job: Job, rank0: bool) -> dict[str, Any] | None:
    """A re-run sweep skips a job that ran to its end (its report is returned), and one that another sweep into the
    same folder is training now (its rank 0 holds the job's lock; the other ranks of a job follow theirs)."""
    from dltrain.core.metrics_file import ENDED_OK, read, status_of
    from dltrain.sweep.ledger import job_lock, release_job_lock
    from dltrain.sweep.plan import job_ended

    finished = read(job[0])
    if status_of(finished) not in ENDED_OK and rank0:
        if job_lock(job[0]) is None:
            job_ended(*job, {"status": "running elsewhere"}, None, "(locked by another process; skipped)")
            return {"status": "running elsewhere"}
        finished = read(job[0])  # its holder may have finished it just before we locked
    if status_of(finished) in ENDED_OK:
        release_job_lock(job[0])
        job_ended(*job, finished, finished.get("wall_seconds"), "(already finished; skipped)")
        return finished
    return None


def train_job(cfg: Any, run_dir: Path, overrides: list[str], project: Path | None, multirun: bool) -> dict[str, Any]:
    """Train (or resume) the job's run; in a sweep its output goes to its dltrain.log."""
    from dltrain.run.config import RunConfig
    from dltrain.run.train import run_job
    from dltrain.sweep.ledger import job_output

    with job_output(run_dir, enabled=multirun):
        return run_job(RunConfig.load(resumed_plain(cfg, run_dir, multirun), project), run_dir, overrides)


def resumed_plain(cfg: Any, run_dir: Path, multirun: bool) -> dict[str, Any]:
    """The job's config as plain data; a sweep's job that left a last.pt (a killed sweep, re-run) resumes from it."""
    from dltrain.run.config import to_plain

    plain = to_plain(cfg)
    if multirun and (run_dir / "last.pt").is_file() and not plain["trainer"].get("resume"):
        plain["trainer"]["resume"] = str(run_dir)  # a killed job of a re-run sweep goes on from its last epoch
    return plain


def parallel_jobs(hydra_cfg: Any, sweep: dict[str, Any]) -> int:
    """How many jobs of this sweep the launcher runs at once on this machine, each to get its share of the cores:
    submitit's local executor starts them all (2 jobs on 2 cores with 2 threads each ran 10x slower). joblib
    limits its workers' threads itself; SLURM gives each job its own cores; Hydra's basic launcher runs one."""
    from omegaconf import OmegaConf

    if not str(OmegaConf.select(hydra_cfg, "launcher._target_", default="")).endswith(".LocalLauncher"):
        return 1
    batch = sweep.get("jobs") or OmegaConf.select(hydra_cfg, "sweeper.n_jobs", default=1)  # Optuna: per batch
    return max(1, int(batch or 1))


def worst_value(sweeper: Any, cfg: Any) -> float:
    """What a failed, diverged or skipped job returns to the sweeper: the worst value for the sweeper's direction
    (Optuna's `direction`, else the monitored metric's mode), so a Bayesian sweeper steers away from it. NaN would
    make Optuna fail the trial, and hydra-optuna-sweeper then stop the whole sweep."""
    from omegaconf import OmegaConf

    direction = OmegaConf.select(sweeper, "direction", default=None, throw_on_resolution_failure=False)
    if not isinstance(direction, str):  # several objectives, or none: the monitored metric decides
        mode = OmegaConf.select(cfg, "early_stopping.mode", default="min", throw_on_resolution_failure=False)
        direction = "maximize" if mode == "max" else "minimize"
    return -math.inf if direction == "maximize" else math.inf


def sweep_value(report: dict[str, Any], worst: float) -> float:
    """The monitored metric's best value for a completed job, what Hydra's sweepers (Optuna) optimize."""
    best = report.get("best")
    ok = report.get("status") == "completed" and isinstance(best, (int, float)) and math.isfinite(best)
    return float(best) if ok else worst


def job_name(hydra_cfg: Any, run_dir: Path) -> str:
    """A sweep job's name: its folder under the sweep root (the swept values, e.g. optim=adam,sched=step)."""
    try:
        return str(hydra_cfg.sweep.subdir) or run_dir.name
    except Exception:  # noqa: BLE001  (a custom subdir that does not resolve here)
        return run_dir.name


def with_wall_time(run_dir: Path, report: dict[str, Any], seconds: float) -> dict[str, Any]:
    """metrics.json gains the job's wall time (data, build, training, test: everything but start-up), beside
    train_seconds; rewritten atomically by the process that wrote it (rank 0)."""
    from dltrain.core import metrics_file

    out = metrics_file.with_wall_seconds(report, seconds)
    if is_rank0() and metrics_file.path(run_dir).is_file():
        metrics_file.write(run_dir, out)
    return out


def remove_if_empty(run_dir: Path) -> None:
    """A run rejected before training leaves no folder that holds only Hydra's own files."""
    import shutil

    log = run_dir / "dltrain.log"
    if not run_dir.is_dir():
        return
    only_hydra = {p.name for p in run_dir.iterdir()} <= {".hydra", "dltrain.log"}
    if only_hydra and (not log.exists() or log.stat().st_size == 0):
        shutil.rmtree(run_dir, ignore_errors=True)


def job_failed(messages: list[str], run_dir: Path, overrides: list[str], job: Job | None,
               code: int, seconds: float) -> None:
    """A single run: one line per problem and exit `code`. A sweep job (`job`: folder, name, number): the failure
    recorded in its metrics.json, one line on the terminal, and the sweep carries on."""
    if job is None:
        for message in messages:
            print(f"dltrain: {message}", file=sys.stderr, flush=True)
        remove_if_empty(run_dir)
        sys.exit(code)
    from dltrain.core import metrics_file
    from dltrain.sweep.plan import job_ended

    record = metrics_file.failure("; ".join(messages), seconds, overrides)
    try:  # on a full disk the record may not fit either: the terminal line and the sweep's table still say it
        if is_rank0():  # rank 0 of a job's tasks writes for them all
            run_dir.mkdir(parents=True, exist_ok=True)
            metrics_file.write(run_dir, record)
    except OSError:
        pass
    job_ended(*job, record, seconds)
