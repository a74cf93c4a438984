"""`dltrain diff RUN_A RUN_B`: what differs between two runs, read from their folders only (nothing is rebuilt).

Four sections, aligned in at most 100 columns: the config keys whose values differ (only those, from each run's
config.yaml), where the runs came from (git commits, versions: metrics.json), their metrics side by side
(metrics.json, the one owner's reader), and their per-epoch histories (the TensorBoard event files), compared
bitwise: the values the files store are float32, and two are equal only when their 32 bits are. The history
section names the first epoch at which any per-epoch value differs, with the tags and both values, or says
"identical". Wall-clock values (epoch seconds, throughput) differ between any two runs and are not compared.

Exit status, as diff(1): 0 when the configs are equal and the histories identical (a reproduced run), 1 when
anything of those differs, 2 for bad input (one line).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dltrain.core import metrics_file
from dltrain.core.event_files import epoch_scalars
from dltrain.core.files import looked_in
from dltrain.core.registry import ConfigError, check, first_line
from dltrain.core.tags import board_tag

WALL_CLOCK = (board_tag("time/"), board_tag("throughput/"))  # differ between any two runs: not compared
ORIGIN = ("git_commit", "project", "project_git_commit", "project_git_dirty", "dltrain", "torch", "python")
WIDTH = 100  # columns: a name (<= NAME_W), then A and B (<= VALUE_W each), two spaces apart
NAME_W, VALUE_W = 34, 30
SHOWN_TAGS = 8  # tags listed at the first differing epoch; the rest are counted


@dataclass
class RunRecord:
    """What a run folder says about its run."""

    path: Path
    config: dict[str, Any]  # flat: "optim.lr" -> 0.1
    report: dict[str, Any]  # metrics.json; {} while the run has not finished
    history: dict[str, dict[int, float]]  # tag -> epoch -> the stored float32 value


def load_record(where: Path) -> RunRecord:
    """A run folder (or a checkpoint in one) read back; a ConfigError in one line when it is not one, its config.yaml
    or metrics.json is damaged, or it has no per-epoch values yet."""
    folder = where.parent if where.is_file() else where
    check(folder.is_dir(), f"{where} is not a run folder{looked_in(where)}; give a run's folder, e.g. "
          "outputs/DATE/TIME or a sweep job's folder")
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        runs = sorted(file.parent for file in folder.glob("*/config.yaml"))
        hint = f" (a sweep? its runs are its sub-folders, e.g. {runs[0]})" if runs else ""
        raise ConfigError(f"{folder} is not a run folder: it has no config.yaml{hint}; give a run's folder")
    try:
        config = yaml.safe_load(config_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{config_file} is damaged (not YAML: {first_line(err, 80)}); diff needs the config "
                          "the run wrote") from None
    check(isinstance(config, dict), f"{config_file} is damaged (a YAML {type(config).__name__}, not a mapping)")
    try:
        report = metrics_file.load(folder)
    except FileNotFoundError:
        report = {}  # not finished (or killed): its config and history still compare
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        history = epoch_scalars(folder)
    except Exception as err:  # noqa: BLE001  (whatever TensorBoard's reader raises on a damaged file: one line)
        raise ConfigError(f"{folder}: a TensorBoard event file is damaged ({type(err).__name__}: "
                          f"{first_line(err, 80)})") from None
    check(bool(history), f"{folder} has no TensorBoard event file with per-epoch values yet; give a run that has "
          "finished at least one epoch")
    return RunRecord(folder, flat(config), report, history)


def flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Config leaves by dotted key; a list is one value."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


ABSENT = object()  # a key or value one run has and the other lacks


def config_changes(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, A's value, B's value) for each key whose values differ, in A's order, then B's own keys."""
    keys = [*a, *(key for key in b if key not in a)]
    return [(key, a.get(key, ABSENT), b.get(key, ABSENT)) for key in keys
            if a.get(key, ABSENT) != b.get(key, ABSENT) or type(a.get(key)) is not type(b.get(key))]


def same_bits(x: float | None, y: float | None) -> bool:
    """Equal as the float32s the event files store (NaN equals the same NaN; 0.0 differs from -0.0)."""
    if x is None or y is None:
        return x is None and y is None
    return struct.pack("<f", x) == struct.pack("<f", y)


def compared_tags(a: RunRecord, b: RunRecord) -> list[str]:
    return sorted(tag for tag in {*a.history, *b.history} if not tag.startswith(WALL_CLOCK))


def first_difference(a: RunRecord, b: RunRecord) -> tuple[int, list[tuple[str, Any, Any]]] | None:
    """The smallest epoch at which any compared per-epoch value differs (or exists in one run only), with
    (tag, A's value, B's value) for each tag that differs there; None when the histories are identical."""
    tags = compared_tags(a, b)
    epochs = sorted({epoch for run in (a, b) for tag in tags for epoch in run.history.get(tag, {})})
    for epoch in epochs:
        values = [(tag, a.history.get(tag, {}).get(epoch), b.history.get(tag, {}).get(epoch)) for tag in tags]
        differing = [(tag, x, y) for tag, x, y in values if not same_bits(x, y)]
        if differing:
            return epoch, differing
    return None


def shown(value: Any) -> str:
    """A value as a user reads it; floats in the fewest digits that tell float32s apart."""
    if value is ABSENT or value is None:
        return "null" if value is None else "(absent)"
    if isinstance(value, float):
        import numpy as np

        try:
            is_float32 = struct.unpack("<f", struct.pack("<f", value))[0] == value
        except OverflowError:  # beyond float32's range: a config value, not a stored one
            is_float32 = False
        return str(np.float32(value)) if is_float32 else repr(value)
    return str(value) if not isinstance(value, (list, dict)) else yaml.safe_dump(value, default_flow_style=True).strip()


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def header(title: str, a: str = "A", b: str = "B") -> str:
    """A section's first line: its title over the names, the runs' letters over their columns."""
    return f"{cut(title, NAME_W + 2):{NAME_W + 2}s}  {a:{VALUE_W}s}  {b}".rstrip()


def row(name: str, a: str, b: str, mark: str = " ") -> str:
    return f"{mark} {cut(name, NAME_W):{NAME_W}s}  {cut(a, VALUE_W):{VALUE_W}s}  {cut(b, VALUE_W)}".rstrip()


def config_section(a: RunRecord, b: RunRecord) -> list[str]:
    changes = config_changes(a.config, b.config)
    if not changes:
        return [f"config: equal ({len(a.config)} keys)"]
    head = f"config: {len(changes)} key{'s' if len(changes) > 1 else ''} differ{'s' if len(changes) == 1 else ''}"
    return [header(head), *(row(key, shown(x), shown(y)) for key, x, y in changes)]


def origin_of(report: dict[str, Any]) -> dict[str, Any]:
    """git commits, project and versions: metrics.json's `git_commit` and `provenance`."""
    found = {"git_commit": report.get("git_commit"), **(report.get("provenance") or {})}
    short = {key: found[key][:12] for key in ("git_commit", "project_git_commit") if isinstance(found.get(key), str)}
    return {key: short.get(key, found.get(key)) for key in ORIGIN}


def origin_section(a: RunRecord, b: RunRecord) -> list[str]:
    """Every origin field either run records; '*' marks those that differ."""
    if not (a.report and b.report):
        missing = " and ".join(run.path.name for run in (a, b) if not run.report)
        return [f"origin: unknown for {missing} (no metrics.json: the run has not finished)"]
    oa, ob = origin_of(a.report), origin_of(b.report)
    keys = [key for key in ORIGIN if oa[key] is not None or ob[key] is not None]
    differ = sum(oa[key] != ob[key] for key in keys)
    head = f"origin: {'the same' if not differ else f'{differ} of {len(keys)} differ (*)'}"
    marks = {key: "*" if oa[key] != ob[key] else " " for key in keys}
    return [header(head), *(row(key, shown(oa[key]), shown(ob[key]), marks[key]) for key in keys)]


def metric_rows(report: dict[str, Any]) -> dict[str, Any]:
    """The report's numbers a user compares: how it ended, its best, the last epoch's and the test metrics."""
    monitor = report.get("monitor", "?")
    out = {"status": metrics_file.status_of(report) if report else "(not finished)", "epochs": report.get("epochs"),
           f"best {monitor}": report.get("best"), "best_epoch": report.get("best_epoch")}
    final = {k: v for k, v in (report.get("final") or {}).items() if not k.startswith(("time/", "throughput/"))}
    out.update({f"final {k}": v for k, v in final.items()})
    out.update(report.get("test") or {})
    out.update({key: report.get(key) for key in ("train_seconds", "samples_per_sec", "threads", "device")})
    return out


def metrics_section(a: RunRecord, b: RunRecord) -> list[str]:
    ma, mb = metric_rows(a.report), metric_rows(b.report)
    names = [*ma, *(name for name in mb if name not in ma)]

    def text(value: Any) -> str:
        return metrics_file.number(value) if metrics_file.is_number(value) else shown(value)

    return [header("metrics (metrics.json)"), *(row(name, text(ma.get(name)), text(mb.get(name))) for name in names)]


def epochs_of(run: RunRecord, tags: list[str]) -> int:
    return max((max(run.history[tag]) for tag in tags if run.history.get(tag)), default=0)


def history_section(a: RunRecord, b: RunRecord) -> tuple[list[str], bool]:
    """The first epoch at which the per-epoch histories differ, or 'identical'; and whether they are."""
    tags = compared_tags(a, b)
    ran = f"A {epochs_of(a, tags)} epochs, B {epochs_of(b, tags)}"
    found = first_difference(a, b)
    if found is None:
        return [f"history: identical (bitwise, {len(tags)} per-epoch tags; {ran}; wall-clock tags not compared)"], True
    epoch, differing = found
    before = f"epochs 1-{epoch - 1} bitwise equal" if epoch > 2 else "epoch 1 bitwise equal" if epoch == 2 else \
        "from the first epoch"
    lines = [f"history: first differs at epoch {epoch} ({before}; {ran})", header("  tag at that epoch")]
    logged = [(tag, *("(not logged)" if v is None else shown(v) for v in (x, y))) for tag, x, y in differing]
    lines += [row(tag, x, y) for tag, x, y in logged[:SHOWN_TAGS]]
    if len(differing) > SHOWN_TAGS:
        lines.append(f"  (and {len(differing) - SHOWN_TAGS} more tags at epoch {epoch})")
    return lines, False


def diff_runs(run_a: Path, run_b: Path) -> tuple[list[str], bool]:
    """The report's lines, and whether the runs are the same: equal configs and identical histories."""
    a, b = load_record(run_a), load_record(run_b)
    history, identical = history_section(a, b)
    lines = [f"A  {a.path}", f"B  {b.path}", "", *config_section(a, b), "", *origin_section(a, b), "",
             *metrics_section(a, b), "", *history]
    return lines, identical and not config_changes(a.config, b.config)
