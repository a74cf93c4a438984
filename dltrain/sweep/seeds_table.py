"""The seed summary below the `dltrain runs` table (and a sweep's end table): the runs grouped by their
configuration without `trainer.seed`, each group's n and mean ± sample standard deviation (n-1) of the monitored
metric's best value and of each test metric, best mean first; printed only when some configuration ran with at
least two seeds. The HParams table is not touched: it keeps one row per run.

A configuration is a run's config.yaml, flattened, not its command-line overrides: a value that differs without
being swept (a re-run of the sweep with another `trainer.max_epochs`, an edited conf file, an experiment's default)
makes another configuration, which the overrides would only see when it was typed on the command line (and they
spell one value several ways: `0.1`, `1e-1`). Left out of the comparison: the seed itself, where a resumed run
resumed from (`trainer.resume`), the recorded overrides list (it names the seed), and keys that only some runs'
configs have (a key a later dltrain release added: its default changes nothing). A run without a readable
config.yaml (a job refused at the door) joins the configuration whose runs had the same overrides but the seed.

Only completed runs are averaged; diverged and failed ones are counted beside n (`3 (1 diverged)`). A
configuration is named by the swept keys other than the seed, as the runs table names runs; where those do not
tell configurations apart, the config keys they differ in are columns too (`-`: a config without the key).
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dltrain.core.metrics_file import COMPLETED, find, is_number, spreads, status_of
from dltrain.run.resume import flat
from dltrain.sweep.runs_table import Column, clip, fit, override_values, rows, section, swept_keys

SEED = "trainer.seed"
NOT_COMPARED = (SEED, "trainer.resume", "overrides")  # differ between the seeds of one configuration


@dataclass
class Group:
    """The runs of one configuration: its name (swept values but the seed), its flat config (None: known only by
    its overrides), the reports, and the seeds they ran with."""

    name: tuple[str, ...]
    config: dict[str, str] | None
    reports: list[dict[str, Any]] = field(default_factory=list)
    seeds: set[str] = field(default_factory=set)


def read_config(run_dir: Path) -> dict[str, str] | None:
    """The run's config.yaml, flattened to KEY -> value text; None when it has none or it is damaged."""
    try:
        found = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return flat(found) if isinstance(found, dict) else None


def given(report: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The run's overrides but the seed and the other keys not compared, in one order."""
    return tuple(sorted((k, v) for k, v in override_values(report).items() if k not in NOT_COMPARED))


def compared(config: dict[str, str], shared: set[str], setting: dict[str, str]) -> dict[str, str]:
    """The config values that tell configurations apart: the keys every run's config has, and those the run's own
    overrides set (`+key=...`, a group's keys), but not the keys of NOT_COMPARED."""
    return {k: v for k, v in config.items() if k not in NOT_COMPARED
            and (k in shared or any(k == o or k.startswith(f"{o}.") for o in setting))}


def group_runs(runs: list[tuple[Path, dict[str, Any]]], keys: list[str]) -> list[Group]:
    """The runs grouped by configuration without the seed (the module's rule), in the order first met."""
    configs = [read_config(folder) for folder, _ in runs]
    known = [set(c) for c in configs if c is not None]
    shared = set.intersection(*known) if known else set()
    groups: dict[Any, Group] = {}
    for (_, report), config in zip(runs, configs):
        setting = override_values(report)
        values = compared(config, shared, setting) if config is not None else None
        key: Any = tuple(sorted(values.items())) if values is not None else next(
            (k for k, g in groups.items() if g.config is not None and any(given(r) == given(report) for r in g.reports)),
            ("overrides", given(report)))  # a run's configuration with the same overrides, else one of its own
        group = groups.setdefault(key, Group(tuple(setting.get(k, "-") for k in keys), values))
        group.reports.append(report)
        seed = (config or {}).get(SEED, setting.get(SEED))
        if seed is not None:
            group.seeds.add(str(seed))
    return list(groups.values())


def unswept_keys(groups: list[Group]) -> list[str]:
    """The config keys, not swept, in which groups of one name differ: more columns that tell them apart."""
    found: set[str] = set()
    for i, group in enumerate(groups):
        for other in groups[i + 1:]:
            if other.name == group.name and group.config is not None and other.config is not None:
                found |= {k for k in {*group.config, *other.config} if group.config.get(k) != other.config.get(k)}
    return sorted(found)


def mean_std(values: list[Any]) -> tuple[float | None, float | None]:
    """The mean and the sample standard deviation (n-1) of the finite values; None where there are too few."""
    real = [float(v) for v in values if is_number(v)]
    return (statistics.fmean(real) if real else None), (statistics.stdev(real) if len(real) >= 2 else None)


def count_text(group: Group) -> str:
    """n, and how many of them were not averaged and why: `3 (1 diverged)`."""
    left_out = Counter(s for s in map(status_of, group.reports) if s != COMPLETED)
    notes = ", ".join(f"{count} {status}" for status, count in sorted(left_out.items()))
    return f"{len(group.reports)}{f' ({notes})' if notes else ''}"


def ranking(mean: float | None, mode: str) -> float:
    return math.inf if mean is None else mean if mode == "min" else -mean


def seeds_table(root: Path, width: int | None = None) -> list[str]:
    """A blank line, then the seed summary of the runs under ROOT in lines no wider than `width`; [] when no
    configuration ran with two seeds or more."""
    runs = find(root)
    data = [report for _, report in runs]
    keys = [k for k in swept_keys(root, data) if k != SEED]
    groups = group_runs(runs, keys)
    if not any(len(g.seeds) >= 2 for g in groups):
        return []
    monitor = next((str(r["monitor"]) for r in data if r.get("monitor")), "")
    mode = next((str(r["mode"]) for r in data if r.get("mode")), "min")
    tests = sorted({k for r in data for k in section(r, "test")}, key=lambda k: (k == "test/loss", k))
    done = [[r for r in g.reports if status_of(r) == COMPLETED] for g in groups]
    stats = {"best": [mean_std([r.get("best") for r in rs]) for rs in done]}
    stats.update({k: [mean_std([section(r, "test").get(k) for r in rs]) for rs in done] for k in tests})
    order = sorted(range(len(groups)), key=lambda i: (ranking(stats["best"][i][0], mode), groups[i].name))
    extra = unswept_keys(groups)
    marked = stats["best"][order[0]][0] is not None  # the best configuration, as the runs table marks its run
    columns: list[Column] = [("", ["*" if marked and i == 0 else "" for i in range(len(groups))], False)]
    columns += [(k, [groups[i].name[j] for i in order], False) for j, k in enumerate(keys)]
    columns += [(k, [(groups[i].config or {}).get(k, "-" if groups[i].config else "?") for i in order], False)
                for k in extra]  # `?`: no config.yaml
    columns.append(("n", [count_text(groups[i]) for i in order], True))
    for header, values in stats.items():
        cells = spreads([values[i][0] for i in order], [values[i][1] for i in order])
        columns.append((header, cells, True))
    if width is not None:
        columns = fit(columns, width, tests[1:][::-1] + tests[:1])
    title = title_line(len(groups), monitor, mode, marked, width)
    lines = ["", title, *rows(columns, len(groups))]
    return [clip(line, width) for line in lines] if width is not None else lines


def title_line(count: int, monitor: str, mode: str, marked: bool, width: int | None) -> str:
    """`2 configuration(s) over trainer.seed: mean ± sample std of the completed runs, by mean best val/loss,
    lowest first (*)`, shortened to fit `width` rather than cut."""
    order = (f"by mean best {monitor or 'monitored value'}, {'lowest' if mode == 'min' else 'highest'} first"
             f"{' (*)' if marked else ''}")
    titles = [f"{count} configuration(s) over {SEED}: mean ± sample std of the completed runs, {order}",
              f"{count} configuration(s) over {SEED}: mean ± sample std, {order}",
              f"{count} configuration(s) over {SEED}: mean ± std, {order}",
              f"mean ± std over {SEED}, {order}", f"mean ± std over seeds{' (*: best)' if marked else ''}"]
    return next((t for t in titles if width is None or len(t) <= width), titles[-1])
