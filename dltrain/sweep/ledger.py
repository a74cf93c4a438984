"""What a sweep's job leaves for the sweep: its output in its own `dltrain.log`, and how it ended, one small JSON
file per job in `<sweep>/.dltrain-jobs/<run>/`, written atomically by the job in whatever process or machine the
launcher ran it (Hydra's basic launcher, joblib, submitit on SLURM with a shared file system), read by the sweep's
own process for the exit code and the table at the end, then removed, with those that killed sweeps into the same
folder left (the sweep's process holds a lock on its own as long as it lives). That process also prints each job's
one-line result as its file appears: a job that runs elsewhere (submitit) has no terminal of its own. Each job
folder's lock (`job_lock`) keeps two sweeps into the same folder from training one job twice.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from dltrain.core import env

FOLDER = ".dltrain-jobs"  # inside the sweep folder, one sub-folder per run of the sweep; removed when it ends
POLL_SECONDS = 0.5  # how often the sweep's process looks for jobs that ended elsewhere
IN_PROCESS: dict[int, dict[str, Any]] = {}  # records of the jobs run in the sweep's own process, kept in memory too:
# a full or read-only disk must not make the sweep forget a failed job (and exit 0)


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def in_sweep_process() -> bool:
    return env.ledger()[1] == this_process()


def record(num: int, entry: dict[str, Any]) -> None:
    """The job's record (its name, status, error, and the line the terminal shows), if a sweep is listening."""
    folder = env.ledger()[0]
    if not folder:
        return
    from dltrain.core.files import write_json_atomic

    entry = {**entry, "num": num, "printed": in_sweep_process()}
    if entry["printed"]:
        IN_PROCESS[num] = entry
    try:  # a full disk must not turn a finished job into a crashed one: the job's own files say how it ended
        write_json_atomic(Path(folder) / f"{num}.json", entry)
    except OSError as err:
        if not entry["printed"]:  # a job run elsewhere: its line and status cannot reach the sweep
            print(f"dltrain: warning: could not record job {num} in {folder}: {err}", file=sys.stderr)


def read(folder: Path) -> list[dict[str, Any]]:
    """Every job's record, in job order; a file a crash left unreadable is skipped."""
    found = list(IN_PROCESS.values())
    for path in folder.glob("*.json"):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("num"), int) and entry["num"] not in IN_PROCESS:
            found.append(entry)
    return sorted(found, key=lambda entry: entry["num"])


@contextmanager
def listening(root: Path | None) -> Iterator[Path]:
    """The sweep's ledger (in its folder, or a temp folder when the folder is only known inside the jobs), the
    environment that points jobs at it, and a thread that prints the lines of jobs that ended elsewhere."""
    IN_PROCESS.clear()
    folder = None
    if root is not None:
        try:  # its own sub-folder: two sweeps started at once into one folder keep apart
            (root / FOLDER).mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="run-", dir=root / FOLDER))
            OWNERS[folder] = owner_lock(folder)
        except OSError:  # not writable: the jobs on this machine still report through a temp folder
            pass
    folder = folder or Path(tempfile.mkdtemp(prefix="dltrain-jobs-"))  # also when only the jobs know the folder
    env.set_ledger(folder, this_process())
    stop = threading.Event()
    printer = threading.Thread(target=print_others, args=(folder, stop), daemon=True)
    printer.start()
    try:
        yield folder
    finally:
        stop.set()
        printer.join()


def print_others(folder: Path, stop: threading.Event) -> None:
    """Print each record's line that its job could not print on this terminal, once, until `stop` (then once more)."""
    shown: set[int] = set()
    while True:
        ending = stop.is_set()
        for entry in read(folder):
            if not entry.get("printed") and entry["num"] not in shown:
                shown.add(entry["num"])
                print(entry.get("line", ""), flush=True)
        if ending:
            return
        stop.wait(POLL_SECONDS)


OWNER_LOCK = ".owner.lock"  # in a sweep's ledger, locked by the sweep's process as long as it lives
OWNERS: dict[Path, Any] = {}  # this process's ledgers -> the open file that holds the lock


def owner_lock(folder: Path) -> Any:
    """Lock the ledger as this process's (the OS drops the lock when the process dies, however it dies)."""
    import fcntl

    handle = open(folder / f"{OWNER_LOCK}.new", "a")  # noqa: SIM115  (kept open: the lock lives as long as the file)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(folder / f"{OWNER_LOCK}.new", folder / OWNER_LOCK)  # seen by others only once locked
    return handle


def remove_orphans(ledgers: Path) -> None:
    """The ledgers that sweeps into this folder left when they were killed (their owner lock is free); a sweep
    running now holds its own, and keeps it."""
    import fcntl

    for other in ledgers.iterdir():
        try:
            with open(other / OWNER_LOCK) as handle:  # a ledger without one (made by an older dltrain) is left
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(other, ignore_errors=True)
        except OSError:  # held: that sweep runs; or no lock file, or not a folder
            continue


def close(folder: Path) -> None:
    """The ledger has been read: remove it and those of killed sweeps into the same folder (and the sweep's empty
    `.submitit/%j`, which submitit leaves)."""
    shutil.rmtree(folder, ignore_errors=True)
    handle = OWNERS.pop(folder, None)
    if handle is not None:
        handle.close()
    if folder.parent.name == FOLDER:
        remove_orphans(folder.parent)
        if not any(folder.parent.iterdir()):
            with suppress(OSError):  # a sweep started just now made its own
                folder.parent.rmdir()
    literal = folder.parent.parent / ".submitit" / "%j"
    if literal.is_dir() and not any(literal.iterdir()):
        literal.rmdir()


@contextmanager
def job_output(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """In a sweep, a job's own output (its per-epoch lines, summary, warnings, its DDP workers' output) goes to
    <job>/dltrain.log instead of the terminal, at the file-descriptor level so that child processes follow; an
    empty log is removed."""
    if not enabled:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "dltrain.log"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = os.dup(1), os.dup(2)
    except OSError:  # no standard output to redirect (a detached process): nothing to keep off the terminal
        yield
        return
    try:
        with open(log, "ab") as handle:
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])
        if log.is_file() and log.stat().st_size == 0:
            log.unlink()


LOCK_FILE = ".dltrain.lock"  # in a sweep job's folder while the job runs; removed when it ends


def job_lock(run_dir: Path) -> Any:
    """An exclusive lock on the job's folder, held until the job ends (release_job_lock) or this process exits
    (the OS drops it when the process dies, so a killed job never blocks its own resume); None when another
    process holds it."""
    import fcntl

    if run_dir in LOCKS:  # this process holds it already (a sweep re-run in the same process)
        return LOCKS[run_dir]
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        handle = open(path, "a")  # noqa: SIM115  (kept open: the lock lives as long as the file)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        try:  # the file its holder removed while we waited is no lock any more: lock the one at the path now
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        handle.close()
    LOCKS[run_dir] = handle
    return handle


def release_job_lock(run_dir: Path) -> None:
    """The job has ended: remove its lock file, then let go of the lock. Removed while still held, so that a
    process that opened the old file in the meantime sees, once it gets that lock, that it is gone (job_lock)."""
    handle = LOCKS.pop(run_dir, None)
    if handle is None:
        return
    try:
        (run_dir / LOCK_FILE).unlink()
    except OSError:  # a deleted or read-only folder: the lock still goes with the file's closing
        pass
    handle.close()


LOCKS: dict[Path, Any] = {}  # this process's job locks, by job folder; released as each job ends, or at exit
