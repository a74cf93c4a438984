"""Where a stack's output goes while it trains (the vectorised launcher, sweep/vectorized.py): a sweep's job writes
its output to its own dltrain.log (ledger.job_output), but the members of a stack train in one process at once.
So the stack's output (file descriptors 1 and 2, so that child processes follow) goes to an unnamed temporary
file, and as each member ends what was written since the previous member ended is appended to that member's
dltrain.log; the rest, when the stack ends, to the member that ended last. With members trained one after another
each log holds exactly its own run's output, as under the basic launcher; with members trained together the shared
epoch lines go to the first member that ends after them. The terminal is given back for each job's line.
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any


class StackOutput:
    """`with StackOutput() as out:` the process's output goes to a temporary file; `out.to_log(run_dir)` moves what
    is there to run_dir/dltrain.log; `with out.terminal():` prints to the terminal again."""

    def __init__(self) -> None:
        self.saved: tuple[int, int] | None = None
        self.file: Any = None
        self.last: Path | None = None  # the log that gets what is written after the last member ended

    def __enter__(self) -> StackOutput:
        flush()
        try:
            self.saved = os.dup(1), os.dup(2)
        except OSError:  # no standard output (a detached process): nothing to keep off the terminal
            return self
        self.file = tempfile.TemporaryFile()  # noqa: SIM115  (closed in __exit__)
        self.point_at(self.file.fileno())
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self.saved is None:
            return
        try:
            if self.last is not None:
                self.to_log(self.last)
        finally:
            self.point_at(self.saved[0], self.saved[1])
            os.close(self.saved[0])
            os.close(self.saved[1])
            self.file.close()
            self.saved = None

    def point_at(self, out: int, err: int | None = None) -> None:
        flush()
        os.dup2(out, 1)
        os.dup2(out if err is None else err, 2)

    @contextmanager
    def terminal(self) -> Iterator[None]:
        """The terminal back for a moment (a job's one line), then the stack's output to the file again."""
        if self.saved is None:
            yield
            return
        self.point_at(self.saved[0], self.saved[1])
        try:
            yield
        finally:
            self.point_at(self.file.fileno())

    def to_log(self, run_dir: Path) -> None:
        """Append what the stack wrote since the last call to run_dir/dltrain.log (none: no file is made)."""
        self.last = run_dir
        if self.file is None:
            return
        flush()
        self.file.seek(0)
        written = self.file.read()
        self.file.seek(0)
        self.file.truncate()
        if written:
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / "dltrain.log", "ab") as log:
                log.write(written)


def flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
