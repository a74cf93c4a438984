"""How a sweep's job failed, in one line: a config problem, an OSError (what is still saved to resume from), a crash
(its traceback to the job's dltrain.log), a failed DDP worker; and whether an error is a signal in disguise. Used by
sweep/jobs.py (one job) and sweep/vectorized.py (a stack's members)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def signalled(err: BaseException) -> bool:
    """Whether an error is a signal in disguise: one arrived (a library turned it into its own error), or torch's
    elastic launcher reports its workers stopped by one."""
    from dltrain.run.signals import received

    return received() is not None or type(err).__name__ == "SignalException"


def failure_of(err: Exception, run_dir: Path, max_epochs: Any, multirun: bool) -> tuple[list[str], int] | None:
    """The lines that report a job's failure and the exit code of a single run (2: a config problem); None for an
    error a single run shows with its traceback."""
    from dltrain.core.registry import ConfigError

    if isinstance(err, ConfigError):
        return [f"error: {problem}" for problem in err.problems], 2
    if isinstance(err, OSError):  # a full disk, a read-only or deleted run folder: what was saved stays whole
        return [f"error: {os_failure(err, run_dir, max_epochs)}"], 1
    if multirun or is_worker_failure(err):
        return [f"error: {crash_line(err, run_dir, multirun)}"], 1
    return None


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


def is_worker_failure(err: BaseException) -> bool:
    return type(err).__name__ == "ChildFailedError"


def one_line(err: BaseException, where: str = "above") -> str:
    if is_worker_failure(err):
        from dltrain.core.dist import worker_failure

        return worker_failure(list(getattr(err, "failures", {}).values()), where)
    from dltrain.core.registry import first_line

    return f"{type(err).__name__}: {first_line(err)}"
