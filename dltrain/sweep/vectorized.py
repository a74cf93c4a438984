"""`hydra/launcher=vectorized` (issue 21): a sweep's points that differ only in per-member keys train together as one
stack (run/stacked.py `train_stack`), each leaving in its own folder what the basic launcher leaves there.

Each job is first set up by Hydra's own `run_job`, as Hydra's basic launcher sets it up (its config composed, its
folder, .hydra/ and HydraConfig), with a task function that decides what sweep/jobs.py `hydra_job` decides before
training: a finished job, or one locked by another process, is skipped with its line; the config is checked at the
door (a refused job is recorded failed, the sweep goes on); a job that left a last.pt resumes. The jobs to train
are grouped by run/stacking.py `plan_stacks` (the group cap: hydra.launcher.max_members); one line per stack says
what it stacks, one per job that runs alone says why (a job alone runs through `run_job` with the sweep's task
function: exactly as under the basic launcher). As each member ends: its one line, its ledger record and wall time.
Ctrl-C or SIGTERM: one line with the command that continues the sweep, and 130/143. Hydra takes a launcher only
from the hydra_plugins package (hydra_plugins/dltrain_launcher names this class there); nothing heavy is imported
at module level (Hydra imports this module at every start while it scans its plugins).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.plugins.launcher import Launcher


@dataclass
class Point:
    """One job of the sweep as set up: Hydra's record of it, its folder and line, and what is left to do."""

    num: int  # the job's number (hydra.job.num)
    sweep_config: Any  # the job's composed config (with hydra), for run_job when it trains alone
    run_dir: Path
    overrides: list[str]  # as given, for its records
    worst: float  # what a failed job returns to the sweeper
    job: Any  # sweep/jobs.py Job: folder, name, number, plan: what its line and ledger record need
    config: Any = None  # its RunConfig, when it is to train
    alone: str | None = None  # why it cannot join a stack
    ret: Any = None  # Hydra's JobReturn; its return_value is the sweep value once the job is done
    done: bool = False  # skipped, refused, trained or failed: nothing left to do
    value: float | None = None  # its sweep value once done before training (skipped, refused at the door)


class VectorizedLauncher(Launcher):
    """Hydra's launcher interface (setup, launch) over dltrain's stacked trainer."""

    def __init__(self, max_members: int | None = None) -> None:
        super().__init__()
        self.max_members = max_members
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None
        self.loading: Any = None  # the config loader's load_sweep_config (sweep/validated.py)

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        from dltrain.sweep.validated import skip_validation

        self.loading = skip_validation(hydra_context.config_loader)


    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        """Set every job up, then train the stacks and the jobs alone, in order of their first job; Hydra's
        JobReturns in job order, each with the job's sweep value (Optuna reads them)."""
        from hydra.core.utils import configure_log, setup_globals

        from dltrain.run.signals import deferred, on_signal_raise_interrupt

        setup_globals()
        self.loading.launching = True  # jobs are composed from here on (the sweeper's check was skipped)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        checked_cap(self.max_members)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        on_signal_raise_interrupt()  # from here a signal is the sweep's one line (how to continue it)
        context = job_context(self.task_function)
        points: list[Point] = []
        try:
            with deferred():  # torch's import cut short can abort the process: a signal waits for its end
                import dltrain.run.train  # noqa: F401
            points += [self.set_up(initial_job_idx + k, list(o), context) for k, o in enumerate(job_overrides)]
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            for unit in units_of(points, self.max_members):
                self.run_unit([points[i] for i in unit.jobs], unit)
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Terminated)
            stopped(err, points, len(job_overrides), context, self.config)
        except Exception as err:
            from dltrain.sweep.job_failures import signalled

            if signalled(err):  # a signal that a library turned into an error of its own
                stopped(err, points, len(job_overrides), context, self.config)
            raise
        finally:  # however the launch ends (a job alone that a signal stopped exits from inside): no lock is left
            from dltrain.sweep.ledger import release_job_lock

            for point in points:
                release_job_lock(point.run_dir)
        return [point.ret for point in points]

    def set_up(self, num: int, overrides: list[str], context: Any) -> Point:
        """The job composed and its folder made by Hydra's run_job, as the basic launcher has it; what to do with
        it decided inside (`examined`), where HydraConfig is the job's."""
        from hydra.core.utils import run_job
        from omegaconf import open_dict

        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = num
            sweep_config.hydra.job.num = num
        from hydra.core.utils import JobStatus

        ret = run_job(hydra_context=self.hydra_context, task_function=lambda cfg: examined(cfg, context, sweep_config),
                      config=sweep_config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        if ret.status != JobStatus.COMPLETED:  # it raised: Hydra's sweeper reports it as for the basic launcher
            return Point(num, sweep_config, Path(), overrides, 0.0, None, ret=ret, done=True)
        point = ret.return_value
        point.ret, ret.return_value = ret, point.value
        return point

    def run_unit(self, points: list[Point], unit: Any) -> None:
        from dltrain.run.stacking import unit_line

        print(f"vectorized: {unit_line(unit, [p.num for p in points])}", flush=True)
        if unit.reason is not None:
            self.run_alone(points[0])
        else:
            train_group(points)

    def run_alone(self, point: Point) -> None:
        """The ordinary path: Hydra's run_job with the sweep's task function (sweep/jobs.py hydra_job)."""
        from hydra.core.utils import configure_log, run_job

        point.ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=point.sweep_config,
                            job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        point.done = True
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)


def examined(cfg: Any, context: Any, sweep_config: Any) -> Point:
    """Inside the job, as sweep/jobs.py hydra_job begins: skip it if finished or locked elsewhere; check its config at
    the door (a refusal is the job's failure record and line); a job that left a last.pt resumes from it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from dltrain.core.env import is_rank0
    from dltrain.run.config import RunConfig
    from dltrain.run.stacked import why_alone
    from dltrain.sweep.job_failures import failure_of
    from dltrain.sweep.jobs import job_failed, job_of, resumed_plain, skipped_job, sweep_value
    from dltrain.sweep.ledger import job_output, release_job_lock

    hydra_cfg = HydraConfig.get()
    run_dir, overrides, worst, job = job_of(hydra_cfg, cfg, context.sweep)
    point = Point(int(hydra_cfg.job.num), sweep_config, run_dir, overrides, worst, job)
    skipped = skipped_job(job, is_rank0())
    if skipped is not None:
        return finished(point, sweep_value(skipped, worst))
    started = time.monotonic()
    try:
        with job_output(run_dir):  # the door's warnings go to the job's log, as a job's own output does
            point.config = RunConfig.load(resumed_plain(cfg, run_dir, True), context.project)
    except Exception as err:  # noqa: BLE001  (a refused job must not stop the sweep)
        failure = failure_of(err, run_dir, OmegaConf.select(cfg, "trainer.max_epochs"), True)
        lines, code = failure or ([f"error: {err}"], 1)
        job_failed(lines, run_dir, overrides, job, code=code, seconds=time.monotonic() - started)
        release_job_lock(run_dir)
        return finished(point, worst)
    point.alone = hydra_reason(hydra_cfg) or why_alone(point.config)
    return point


def finished(point: Point, value: float) -> Point:
    point.done, point.value = True, value
    return point


def hydra_reason(hydra_cfg: Any) -> str | None:
    """What Hydra does per job that a stack cannot do per member."""
    if hydra_cfg.job.chdir:
        return "hydra.job.chdir=true runs each job in its own working directory"
    if hydra_cfg.job.env_set:
        return "hydra.job.env_set sets environment variables per job"
    return None


def units_of(points: list[Point], cap: int | None) -> list[Any]:
    """The stacks and the jobs alone (run/stacking.py plan_stacks), over the jobs still to train."""
    from dltrain.run.stacking import plan_stacks

    configs = [None if p.done else p.config.resolved for p in points]
    return plan_stacks(configs, [p.alone for p in points], cap)


def train_group(points: list[Point]) -> None:
    """Train one stack; each member, as it ends: its log, its wall time (from the stack's start: its members train
    at once), its line and ledger record, its lock released, its sweep value."""
    from dltrain.core import metrics_file
    from dltrain.run.stacked import Member, train_stack
    from dltrain.sweep.jobs import sweep_value, with_wall_time
    from dltrain.sweep.ledger import release_job_lock
    from dltrain.sweep.plan import job_ended
    from dltrain.sweep.stack_output import StackOutput

    started = time.monotonic()
    members = [Member(p.config, p.run_dir, p.overrides) for p in points]

    def on_end(i: int, report: dict[str, Any]) -> None:
        point = points[i]
        if report.get("status") != "failed":  # its summary, into its log as a run's own (a failure has its line)
            print(metrics_file.summary_text(report, point.run_dir), flush=True)
        output.to_log(point.run_dir)
        report = with_wall_time(point.run_dir, report, time.monotonic() - started)
        with output.terminal():
            job_ended(*point.job, report, report["wall_seconds"])
        release_job_lock(point.run_dir)
        point.ret.return_value, point.done = sweep_value(report, point.worst), True

    with StackOutput() as output:
        try:
            train_stack(members, on_end)
            if not all(p.done for p in points):  # the trainer's contract: every member ends through on_end
                raise RuntimeError("train_stack returned without ending this member")
        except Exception as err:  # noqa: BLE001  (a crashed stack: its members not yet ended failed; the sweep goes on)
            from dltrain.sweep.job_failures import signalled

            if signalled(err):
                raise
            with output.terminal():
                stack_failed(err, [p for p in points if not p.done], time.monotonic() - started)
        finally:  # what is left (an interrupted or crashed stack): to the first member that had not ended
            output.last = next((p.run_dir for p in points if not p.done), output.last)


def stack_failed(err: Exception, points: list[Point], seconds: float) -> None:
    """Each member that had not ended gets the crash as its failure (its record and line; the traceback in its log)."""
    from dltrain.sweep.job_failures import failure_of
    from dltrain.sweep.jobs import job_failed
    from dltrain.sweep.ledger import release_job_lock

    for point in points:
        failure = failure_of(err, point.run_dir, point.config.trainer.max_epochs, True)
        job_failed(failure[0] if failure else [f"error: {err}"], point.run_dir, point.overrides, point.job,
                   code=1, seconds=seconds)
        release_job_lock(point.run_dir)
        point.ret.return_value, point.done = point.worst, True


def stopped(err: BaseException, points: list[Point], jobs: int, context: Any, config: Any) -> None:
    """Ctrl-C or SIGTERM: one line with the command that continues the sweep (finished jobs are skipped, the others
    resume from their last.pt), and the signal's exit code (130, 143); the launch releases the job locks."""
    import signal

    from dltrain.run.signals import signal_number

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C now stops at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    done = sum(p.done for p in points)
    print(f"dltrain: interrupted with {done} of {jobs} job(s) ended; continue the sweep with: "
          f"{continue_command(context, config)}", file=sys.stderr, flush=True)
    sys.exit(128 + signal_number(err))


def continue_command(context: Any, config: Any) -> str:
    """The sweep's command as typed, its folder pinned (a re-run into the same folder skips the finished jobs)."""
    import shlex

    from omegaconf import OmegaConf

    from dltrain.run.overrides import override_value, quoted

    given = list(context.command) or ["-m", *OmegaConf.to_container(config.hydra.overrides.task)]
    root = context.sweep.get("root") or str(config.hydra.sweep.dir)
    if not any(a.startswith("hydra.sweep.dir=") for a in given):
        try:
            plain = override_value(f"hydra.sweep.dir={root}") == root
        except Exception:  # noqa: BLE001  (Hydra's grammar refuses it unquoted)
            plain = False
        given.append(f"hydra.sweep.dir={root if plain else quoted(root)}")
    return " ".join(shlex.quote(word) for word in ["dltrain", *given])


def job_context(task_function: Any) -> Any:
    """What the jobs need of the command line: the CLI's job function carries it (sweep/jobs.py job_function)."""
    from dltrain.core import env
    from dltrain.sweep.command_line import JobContext

    return getattr(task_function, "context", None) or JobContext(env.project(), env.sweep())


def checked_cap(cap: Any) -> None:
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        print(f"dltrain: error: hydra.launcher.max_members={cap} must be a whole number >= 1, or null (the trainer "
              "chooses from memory)", file=sys.stderr, flush=True)
        sys.exit(2)

