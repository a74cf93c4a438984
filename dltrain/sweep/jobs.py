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

Job = tuple[Path, str, int, dict[str, Any]]  # a sweep's job: its folder, name, number, and the plan (for_jobs)


def job_function(line: CommandLine) -> Callable[[Any], Any]:
    """The function Hydra calls for each job, with what the job needs of the command line by closure (a launcher
    pickles it, closure and all, into the processes it runs jobs in)."""
    context = JobContext(line.project, line.sweep.for_jobs() if line.sweep else {})

    def job(cfg: Any) -> Any:
        return hydra_job(cfg, context)

    return job


def hydra_job(cfg: Any, context: JobContext) -> Any:
    """One job (one sweep point with -m). In a sweep the job's own output goes to its dltrain.log and the terminal
    gets one line as it ends."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dltrain.run.signals import on_signal_raise_interrupt

    on_signal_raise_interrupt()  # from here a signal is the job's one line (epoch reached, how to resume)
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        join_launcher_tasks(hydra_cfg, context.sweep)
    rank0 = is_rank0()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = given_overrides(hydra_cfg)
    worst = worst_value(hydra_cfg.sweeper, cfg)
    job = (run_dir, job_name(hydra_cfg, run_dir), int(hydra_cfg.job.num), context.sweep) if multirun else None
    skipped = skipped_job(job, rank0) if job else None
    if skipped is not None:
        return sweep_value(skipped, worst)
    try:
        return trained_value(cfg, run_dir, overrides, job, context.project, worst)
    finally:  # the job has ended, whichever way: its folder is free for a later run of the sweep
        from dltrain.sweep.ledger import release_job_lock

        release_job_lock(run_dir)


def trained_value(cfg: Any, run_dir: Path, overrides: list[str], job: Job | None, project: Path | None,
                  worst: float) -> Any:
    """Train the job and return its value for the sweeper; a failure is reported (one line, or the job's record
    in a sweep) and a signal stops it with the resume line."""
    import time

    from dltrain.core.registry import ConfigError
    from dltrain.run.signals import deferred, interrupted, received
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
        if received() or type(err).__name__ == "SignalException":  # a signal that a library turned into its own
            interrupted(err, run_dir, cfg.trainer.max_epochs, multirun)  # error, or the DDP launcher stopping
        if isinstance(err, ConfigError):
            lines, code = [f"error: {problem}" for problem in err.problems], 2
        elif isinstance(err, OSError):  # a full disk, a read-only or deleted run folder: what was saved stays whole
            lines, code = [f"error: {os_failure(err, run_dir, cfg.trainer.max_epochs)}"], 1
        elif multirun or is_worker_failure(err):
            lines, code = [f"error: {crash_line(err, run_dir, multirun)}"], 1
        else:
            raise
        job_failed(lines, run_dir, overrides, job, code=code, seconds=time.monotonic() - started)
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
    """A re-run sweep skips a job that ran to its end (its report is returned), and one that another sweep into
    the same folder is training now (its rank 0 holds the job's lock; the other ranks of a job follow theirs)."""
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
    from dltrain.run.config import RunConfig, to_plain
    from dltrain.run.train import run_job
    from dltrain.sweep.ledger import job_output

    plain = to_plain(cfg)
    if multirun and (run_dir / "last.pt").is_file() and not plain["trainer"].get("resume"):
        plain["trainer"]["resume"] = str(run_dir)  # a killed job of a re-run sweep goes on from its last epoch
    with job_output(run_dir, enabled=multirun):
        return run_job(RunConfig.load(plain, project), run_dir, overrides)


def crash_line(err: Exception, run_dir: Path, multirun: bool) -> str:
    """One line for a job that crashed; in a sweep the whole traceback goes to the job's dltrain.log."""
    if multirun:
        import traceback

        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "dltrain.log", "a") as log:
            traceback.print_exc(file=log)
    resume = not multirun and is_worker_failure(err) and (run_dir / "last.pt").is_file()  # a sweep's re-run resumes
    return one_line(err, f"in {run_dir / 'dltrain.log'}" if multirun else "above") + \
        (f"; resume with: dltrain trainer.resume={run_dir}" if resume else "")


def os_failure(err: OSError, run_dir: Path, max_epochs: Any) -> str:
    """One line for an OSError: the path, the cause and its errno name, and what is still saved to resume from."""
    import errno
    import os

    cause = f"{err.strerror or err} ({errno.errorcode.get(err.errno or 0, 'error')})"
    where = os.fsdecode(err.filename) if err.filename else f"a file in {run_dir}"
    if not run_dir.is_dir():
        return f"{where}: {cause}: the run folder {run_dir} was deleted while the run wrote to it"
    try:
        from dltrain.core.checkpoint import load

        epoch = load(run_dir / "last.pt")["epoch"]
    except Exception:  # noqa: BLE001  (no complete epoch, or the folder is gone)
        return f"{where}: {cause}; no complete epoch is saved in {run_dir}"
    from dltrain.run.resume import command

    return (f"{where}: {cause}; epoch {epoch}/{max_epochs} is saved whole in {run_dir}: free space or make the folder "
            f"writable, then resume with: {command(run_dir)}")


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


def is_worker_failure(err: BaseException) -> bool:
    return type(err).__name__ == "ChildFailedError"


def one_line(err: BaseException, where: str = "above") -> str:
    if is_worker_failure(err):
        from dltrain.core.dist import worker_failure

        return worker_failure(list(getattr(err, "failures", {}).values()), where)
    from dltrain.core.registry import first_line

    return f"{type(err).__name__}: {first_line(err)}"


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
