"""What `dltrain runs` and `dltrain board` open when no folder is named, and TensorBoard served in this process.

The rule (also in their --help): the newest sweep under ./multirun, else the newest run under ./outputs, where
newest means the one whose results or TensorBoard curves were written last (its newest metrics.json or event
file; not the folder's own time, which a job, a resume or `dltrain eval` inside it leaves unchanged). A sweep
is what a user compares runs in, so it wins over single runs tried after it; such a newer single run is named in
one line with the command that opens it.

TensorBoard runs through its own Python API (`program.TensorBoard().launch()`, as in notebooks), not its
`tensorboard` command: without `--port` it takes 6006 or the next free port, and we print which; and its command's
start-up notice "TensorFlow installation not found", which concerns no part of dltrain, is not printed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from dltrain.core import metrics_file

SWEEPS, RUNS = Path("multirun"), Path("outputs")  # Hydra's defaults: multirun/<date>/<time>, outputs/<date>/<time>


def last_written(folder: Path) -> float | None:
    """When the newest metrics.json or TensorBoard event file under `folder` was written (None: it has none)."""
    newest = None
    for parent, _, names in os.walk(folder):
        for name in names:
            if name == metrics_file.NAME or name.startswith("events.out.tfevents."):
                try:
                    written = os.stat(os.path.join(parent, name)).st_mtime
                except OSError:  # removed meanwhile
                    continue
                newest = written if newest is None else max(newest, written)
    return newest


def newest_under(base: Path) -> tuple[Path, float] | None:
    """The folder `base/<date>/<time>` written last, and when."""
    found = [(folder, written) for folder in base.glob("*/*")
             if folder.is_dir() and (written := last_written(folder)) is not None]
    return max(found, key=lambda item: item[1]) if found else None


def default_folder(command: str) -> tuple[Path, str]:
    """The folder `dltrain COMMAND` opens without one (the module's rule), and a note naming a newer single run
    ('' if none). SystemExit(2) with one line when there is nothing to open."""
    sweep, run = newest_under(SWEEPS), newest_under(RUNS)
    if sweep is None and run is None:
        print(f"dltrain: error: no sweep under ./{SWEEPS} and no run under ./{RUNS} here; give a run or sweep "
              "directory", file=sys.stderr)
        raise SystemExit(2)
    if sweep is None:
        return run[0], ""
    newer = run is not None and run[1] > sweep[1]
    return sweep[0], f"a single run is newer: dltrain {command} {run[0]}" if newer else ""


def serve(root: Path, port: int | None, bind_all: bool, what: str) -> None:
    """TensorBoard on `root` until Ctrl+C (or SIGTERM, which ends this process and so TensorBoard with it). One
    line says where; a port that is taken is one line and exit 1."""
    from tensorboard import program

    flags = [None, "--logdir", str(root), *(["--port", str(port)] if port else []), *(["--bind_all"] if bind_all else [])]
    board = program.TensorBoard()
    board.configure(argv=flags)
    try:
        url = board.launch()  # its server thread; the data server (if any) dies with this process's stdin pipe
    except program.TensorBoardPortInUseError:
        print(f"dltrain: error: port {port} is in use (another TensorBoard?); give another --port, or leave it out "
              "to take a free one", file=sys.stderr)
        raise SystemExit(1) from None
    except program.TensorBoardServerException as err:
        print(f"dltrain: error: {err.msg}", file=sys.stderr)
        raise SystemExit(1) from None
    reach = "" if bind_all else "; --bind_all serves other machines too"
    print(f"TensorBoard on {root}{what} at {url} (Ctrl+C stops it{reach})", flush=True)
    wait_for_interrupt()


def wait_for_interrupt() -> None:
    import threading

    try:
        threading.Event().wait()  # the server is a daemon thread: it ends with this process
    except KeyboardInterrupt:
        print(file=sys.stderr)  # the terminal's ^C stays on a line of its own
