"""metrics.json, a run's report, and its one owner: the file's name, its statuses, writing it (atomically) and
reading it back, the summary line a run ends with, and the number format of the sweep's job lines and of the
`runs` table. Every other module goes through here.

A report is written by rank 0 when the run has tested (status `completed`, or `diverged` when a non-finite value
stopped it), rewritten once with the job's wall time, or written for a sweep job that failed (`failed`, with its
error). A folder without one holds a run that never finished; a damaged one reads as status `unreadable`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dltrain.core.files import write_json_atomic

NAME = "metrics.json"
COMPLETED, DIVERGED, FAILED = "completed", "diverged", "failed"
UNREADABLE = "unreadable"  # a file that is not a JSON object: a crash or an edit damaged it
ENDED_OK = (COMPLETED, DIVERGED)  # ran to its end: stopped by max_epochs, early stopping or a NaN


def path(run_dir: Path) -> Path:
    return run_dir / NAME


def write(run_dir: Path, report: dict[str, Any]) -> None:
    """Strict JSON (NaN and infinities as null), replaced atomically: a reader sees the old report or the new one."""
    write_json_atomic(path(run_dir), report)


def load(run_dir: Path) -> dict[str, Any]:
    """The report of a run that has written one: an OSError names a missing file, a ValueError in one line says that
    the file is damaged."""
    file = path(run_dir)
    try:
        found = json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"{file} is damaged (not JSON: {err}); delete it, and resume the run to write it again") \
            from None
    if not isinstance(found, dict):
        raise ValueError(f"{file} is damaged (a JSON {type(found).__name__}, not an object); delete it, and resume "
                         "the run to write it again")
    return found


def read(run_dir: Path) -> dict[str, Any]:
    """The run's report, {} when it has none (not finished, or not a run), {"status": "unreadable"} when damaged."""
    try:
        return load(run_dir)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {"status": UNREADABLE}


def find(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(run folder, report) of every report under root, in path order."""
    return [(file.parent, read(file.parent)) for file in sorted(root.rglob(NAME))]


def ended_status(stop_reason: str) -> str:
    """How a run that tested ended: diverged when a non-finite value stopped it (callbacks.EarlyStopping)."""
    return DIVERGED if stop_reason.startswith("non-finite") else COMPLETED


def status_of(report: dict[str, Any]) -> str:
    """completed | diverged | failed | unreadable | ... ('?' for none); also for reports written before the
    status `diverged` existed."""
    status = str(report.get("status", "?"))
    if status == COMPLETED:
        return ended_status(str(report.get("stop_reason") or ""))
    return status


def failure(error: str, seconds: float, overrides: list[str]) -> dict[str, Any]:
    """The report of a sweep job that failed: its error line, the wall time it took (s) and its overrides."""
    return {"status": FAILED, "error": error, "wall_seconds": round(seconds, 3), "overrides": overrides}


def with_wall_seconds(report: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The report with the job's wall time (s, everything but start-up) right after train_seconds."""
    out: dict[str, Any] = {}
    for key, value in report.items():
        out[key] = value
        if key == "train_seconds":
            out["wall_seconds"] = round(seconds, 3)
    out.setdefault("wall_seconds", round(seconds, 3))
    return out


def summary_text(report: dict[str, Any], run_dir: Path) -> str:
    """What a run prints as it ends: the best epoch, the last epoch's val metrics, the test metrics, why it stopped."""
    val = "  ".join(f"{k} {v:.4g}" for k, v in report["final"].items() if k.startswith("val/")) or "(no val split)"
    test = "  ".join(f"{k} {v:.4g}" for k, v in report["test"].items()) or "(no test split)"
    best = report["best"]
    best_text = f"{best:.4g} at epoch {report['best_epoch']}" if best is not None else "n/a"
    return (f"\nbest {report['monitor']} {best_text}\nfinal  {val}\ntest   {test}\n"
            f"epochs {report['epochs']}, stopped: {report['stop_reason']}\nrun dir {run_dir}")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any, decimals: int = 4) -> str:
    """One value: fixed decimals, scientific only outside [1e-3, 1e5); '-' for none/NaN."""
    if not is_number(value):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{decimals}f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.{max(decimals - 1, 1)}e}"


def numbers(values: list[Any], decimals: int = 4) -> list[str]:
    """One format per column: integers as they are, else fixed decimals, or scientific for the whole column
    when a value falls outside [1e-3, 1e5); '-' where there is none."""
    real = [v for v in values if is_number(v)]
    if all(isinstance(v, int) for v in real):
        return [str(v) if is_number(v) else "-" for v in values]
    fixed = all(v == 0 or 1e-3 <= abs(v) < 1e5 for v in real)
    return [("-" if not is_number(v) else f"{v:.{decimals}f}" if fixed else f"{v:.{max(decimals - 1, 1)}e}")
            for v in values]


def spreads(means: list[Any], stds: list[Any], decimals: int = 4) -> list[str]:
    """`mean ± std` per row of one column, the means in one format and the standard deviations in one (numbers),
    aligned on the ±; `mean (1 run)` where there is no std, '-' where there is no mean."""
    mean_texts, std_texts = numbers(means, decimals), numbers(stds, decimals)
    std_w = max((len(s) for s, d in zip(std_texts, stds) if is_number(d)), default=0)
    tails = [f"± {s.rjust(std_w)}" if is_number(d) else "(1 run)" for s, d in zip(std_texts, stds)]
    shown = [(m, t) for m, t, v in zip(mean_texts, tails, means) if is_number(v)]
    mean_w, tail_w = max((len(m) for m, _ in shown), default=0), max((len(t) for _, t in shown), default=0)
    return [f"{m.rjust(mean_w)} {t.ljust(tail_w)}" if is_number(v) else "-" for m, t, v in zip(mean_texts, tails, means)]
