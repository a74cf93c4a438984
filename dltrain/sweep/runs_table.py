"""The `dltrain runs` table: every run under a folder, best first, with the swept keys' values, one number format
per column, fitted to the terminal's width (columns dropped, text abbreviated, never wrapped)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dltrain.core.hparams import read_plan
from dltrain.core.metrics_file import ENDED_OK, FAILED, find, numbers, status_of


def sort_key(report: dict[str, Any]) -> float:
    best = report.get("best")
    if not isinstance(best, (int, float)) or not math.isfinite(best):
        return math.inf
    return best if report.get("mode", "min") == "min" else -best


def terminal_width() -> int:
    """The terminal's width (COLUMNS if set); a wide page when the output is no terminal."""
    import shutil

    return shutil.get_terminal_size((160, 24)).columns


def override_values(report: dict[str, Any]) -> dict[str, str]:
    """A run's command-line overrides as key -> value (`optim=adam` -> optim: adam)."""
    lines = report.get("overrides") if isinstance(report.get("overrides"), list) else []
    return {str(line).split("=", 1)[0].lstrip("+~"): str(line).split("=", 1)[1] for line in lines if "=" in str(line)}


def swept_keys(root: Path, reports: list[dict[str, Any]]) -> list[str]:
    """The keys a sweep varies: as its sweep.json lists them, else the overrides whose values differ."""
    settings = [override_values(r) for r in reports]
    planned = [k for k in read_plan(root).get("swept") or {} if any(k in s for s in settings)]
    if planned:
        return planned
    order = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in order if len({s.get(k) for s in settings}) > 1]


def stopped_text(report: dict[str, Any], status: str) -> str:
    if status == FAILED:
        return str(report.get("error") or "").removeprefix("error: ")
    reason = str(report.get("stop_reason") or "")
    for start, short in (("early stopping", "early stop"), ("non-finite", "non-finite"), ("max_epochs", "max epochs")):
        if reason.startswith(start):
            return short
    return reason or "-"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "~"


Column = tuple[str, list[str], bool]  # header, cells, right-aligned


def runs_table(root: Path, width: int | None = None) -> list[str]:
    """The runs under ROOT, best monitored value first and marked `*`, in lines no wider than `width`: the swept
    keys' values (or the run's folder), status, best, the test metrics, the last epoch's val/train metrics,
    epochs, wall time (the whole job), why it stopped. Columns that do not fit are dropped, least telling first;
    then text is abbreviated."""
    reports = sorted(find(root), key=lambda item: sort_key(item[1]))
    if not reports:
        return []
    data = [r for _, r in reports]
    statuses = [status_of(r) for r in data]
    monitor = next((str(r["monitor"]) for r in data if r.get("monitor")), "")
    mode = next((r.get("mode") for r in data if r.get("mode")), "min")
    tests = sorted({k for r in data for k in section(r, "test")}, key=lambda k: (k == "test/loss", k))
    finals = sorted({k for r in data for k in section(r, "final") if k.startswith("val/")})
    finals += ["train/loss"] if any("train/loss" in section(r, "final") for r in data) else []
    marked = statuses[0] in ENDED_OK and sort_key(data[0]) != math.inf
    columns: list[Column] = [("", ["*" if marked and i == 0 else "" for i in range(len(data))], False)]
    columns += run_columns(root, reports)
    columns += value_columns(data, statuses, tests, finals)
    if width is not None:
        drop = ["train/loss", *[k for k in finals if k not in (monitor, "train/loss")], "best_ep", "epochs",
                monitor, *tests[1:][::-1], "stopped", "wall_s"]
        columns = fit(columns, width, drop)
    order = "lowest" if mode == "min" else "highest"
    ranked = f"by best {monitor or 'monitored value'}"
    rankings = [f"{ranked}, {order} first{' (*)' if marked else ''}", f"{ranked}{' (*)' if marked else ''}"]
    note = "; val/, train/: last epoch" if any(header in finals for header, _, _ in columns) else ""
    title = title_line(f"{len(data)} run(s) in", str(root), rankings, note, width)
    lines = [title, *rows(columns, len(data))]
    return [clip(line, width) for line in lines] if width is not None else lines


def section(report: dict[str, Any], part: str) -> dict[str, Any]:
    """The report's `test` or `final` metrics ({} where a damaged or failed report has none)."""
    found = report.get(part)
    return found if isinstance(found, dict) else {}


def run_columns(root: Path, reports: list[tuple[Path, dict[str, Any]]]) -> list[Column]:
    """Which run each row is: the swept keys' values, and its folder too when they do not tell the runs apart."""
    data = [r for _, r in reports]
    keys = swept_keys(root, data)
    settings = [override_values(r) for r in data]
    names = [str(d.relative_to(root)) if d != root else root.name for d, _ in reports]
    named = not keys or len({tuple(s.get(k) for k in keys) for s in settings}) < len(data)
    return [*([("run", names, False)] if named else []), *[(k, [s.get(k, "-") for s in settings], False) for k in keys]]


def value_columns(data: list[dict[str, Any]], statuses: list[str], tests: list[str], finals: list[str]) -> list[Column]:
    """How each run ended: status, best, the test and last-epoch metrics, epochs, wall time (s), why it stopped."""
    columns: list[Column] = [("status", statuses, False)]
    columns.append(("best", numbers([r.get("best") for r in data]), True))
    columns.append(("best_ep", numbers([r.get("best_epoch") for r in data]), True))
    columns += [(k, numbers([section(r, "test").get(k) for r in data]), True) for k in tests]
    columns += [(k, numbers([section(r, "final").get(k) for r in data]), True) for k in finals]
    columns.append(("epochs", numbers([r.get("epochs") for r in data]), True))
    columns.append(("wall_s", numbers([r.get("wall_seconds", r.get("train_seconds")) for r in data], 1), True))
    columns.append(("stopped", [stopped_text(r, s) for r, s in zip(data, statuses)], False))
    return columns


def rows(columns: list[Column], count: int) -> list[str]:
    """The header and `count` rows, each column as wide as its widest cell, numbers right-aligned."""
    widths = [max(len(header), *(len(cell) for cell in cells)) for header, cells, _ in columns]
    lines = []
    for i in range(-1, count):
        row = [header if i < 0 else cells[i] for header, cells, _ in columns]
        lines.append("  ".join(cell.rjust(w) if right else cell.ljust(w)
                               for cell, w, (_, _, right) in zip(row, widths, columns)).rstrip())
    return lines


def title_line(count: str, folder: str, rankings: list[str], note: str, width: int | None) -> str:
    """`6 run(s) in FOLDER by best val/loss, lowest first (*); val/, train/: last epoch`, shortened to fit `width`
    rather than cut: without the note, then the folder's leading parts (`.../21-14-14`), then the order."""
    parts = folder.split("/")
    folders = [folder] + [".../" + "/".join(parts[i:]) for i in range(1, len(parts))]
    titles = [f"{count} {folder} {rankings[0]}{note}"] + [f"{count} {f} {r}" for r in rankings for f in folders]
    return next((title for title in titles if width is None or len(title) <= width), titles[-1])


def fit(columns: list[Column], width: int, drop: list[str]) -> list[Column]:
    """Drop the columns named in `drop`, in that order, then abbreviate text (the stop reason, then run names
    and swept values) until a row fits in `width`; never wrap."""
    def total(cols: list[Column]) -> int:
        return sum(max(len(h), *(len(c) for c in cells)) for h, cells, _ in cols) + 2 * (len(cols) - 1)

    columns = list(columns)
    for header in drop:
        if total(columns) <= width:
            break
        columns = [c for c in columns if c[0] != header or c[0] in ("", "status", "best")]
    texts = ["stopped", *(h for h, _, right in columns[1:] if not right and h not in ("status", "stopped"))]
    for header in texts:
        excess = total(columns) - width
        if excess <= 0:
            break
        at = next((i for i, c in enumerate(columns) if c[0] == header), None)
        if at is None:
            continue
        name, cells, right = columns[at]
        current = max(len(name), *(len(c) for c in cells))
        room = max(current - excess, len(name), 10 if header == "stopped" else 6)
        columns[at] = (name, [clip(c, room) for c in cells], right)
    return columns
