"""How a signal stops a run: Ctrl-C (SIGINT), SIGTERM and SLURM's SIGUSR1 raise an interrupt where the process is;
the job reports it as one line with the signal's exit code (130, 143) and the resume command. Every file a later
command reads is written atomically, so stopping at any instant leaves the last complete epoch's checkpoint.

A signal is also remembered (`received`): a library may swallow the interrupt (a bare `except:` around an import)
or turn it into an error of its own (an import cut short), and the run must still stop, with the same line.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RECEIVED: list[int] = []  # the signals that asked this process to stop, first first


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SLURM's SIGUSR1), raised where the process is, like Ctrl-C's KeyboardInterrupt."""

    signal = 15


def on_signal_raise_interrupt() -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM Terminated, each remembered; SIGUSR1 (SLURM's warning before
    pre-emption or the time limit, `--signal=USR1@90`) is sent on as SIGTERM, so whoever handles SIGTERM then (this
    handler, or the DDP launcher stopping its workers) stops the run the same way."""
    def raise_interrupt(signum: int, frame: Any) -> None:
        RECEIVED.append(signum)
        raise interrupt_of(signum)

    def as_terminate(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGINT, raise_interrupt)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGUSR1, as_terminate)


def exit_on_signal() -> None:
    """For start-up, before Hydra starts a job and before anything is written: Ctrl-C or SIGTERM prints the one line
    and exits at once (130, 143). Raising an interrupt there could land in an import's weakref callback, where Python
    prints it as 'Exception ignored ...' and goes on. Each job installs `on_signal_raise_interrupt` as it starts.
    SLURM's SIGUSR1 counts as SIGTERM, as in a job."""
    def leave(signum: int, frame: Any) -> None:
        RECEIVED.append(signum)
        try:
            sys.stdout.flush()
        finally:
            os.write(2, b"dltrain: interrupted\n")
            os._exit(128 + signum)

    signal.signal(signal.SIGINT, leave)
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGUSR1, lambda signum, frame: leave(signal.SIGTERM, frame))


def interrupt_of(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def received() -> int | None:
    """The first signal that asked this process to stop, or None."""
    return RECEIVED[0] if RECEIVED else None


def stop_if_signalled() -> None:
    """Raise the interrupt of a signal that arrived but was swallowed (called before training starts)."""
    if RECEIVED:
        raise interrupt_of(RECEIVED[0])


@contextmanager
def deferred() -> Iterator[None]:
    """Inside the block a signal is only remembered, then raised as it ends: torch's import cut short by an interrupt
    can abort the whole process in C++ (seen: exit -6) or leave it to crash at exit."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: RECEIVED.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stop_if_signalled()


def signal_number(err: BaseException) -> int:
    number = received() or getattr(err, "sigval", None) or getattr(err, "signal", None) or signal.SIGINT
    return int(getattr(number, "value", number))


def interrupted(err: BaseException, run_dir: Path, max_epochs: Any, sweep: bool) -> None:
    """One line, the exit code of the signal (130 Ctrl-C, 143 SIGTERM or SIGUSR1); a second Ctrl-C now stops at once.
    Of a group that torchrun or SLURM started, only rank 0 says it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    code = 128 + signal_number(err)
    from dltrain.core.env import is_rank0

    if not is_rank0():
        sys.exit(code)
    try:
        from dltrain.core.checkpoint import load

        done = f"epoch {load(run_dir / 'last.pt')['epoch']}/{max_epochs}"
    except Exception:  # noqa: BLE001  (no complete epoch yet: nothing to resume)
        print(f"dltrain: interrupted before the first epoch ended; nothing saved in {run_dir}", file=sys.stderr)
        if not sweep:  # a single run that saved nothing: no clean-up (a sweep's ledger) to skip
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # an import cut short can leave a C extension half made: its clean-up at exit may crash
        sys.exit(code)
    from dltrain.run.resume import command

    print(f"dltrain: interrupted at {done}; resume with: {command(run_dir)}", file=sys.stderr)
    sys.exit(code)
