"""The HParams experiment of a sweep (tensorboard's own `summary_v2.hparams_config_pb`): each hyper-parameter's
domain with the swept ones marked as differing, and the metric columns; merged with what a previous run of the
same sweep wrote (`sweep.json` at its root), so a re-run that adds values widens the domains.

The experiment is written into each job's folder, not the root (a folder with an event file is a TensorBoard run):
by every job as it starts, and here into every job folder already there whenever the sweep starts again. The
writing itself, and the job's side, are dltrain/core/hparams.py's."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dltrain.core.hparams import PLAN_FILE, read_plan, write_experiment
from dltrain.core.registry import ConfigError
from dltrain.core.tags import best_tag, board_tag

OLD_EXPERIMENTS = "events.out.tfevents.*.hparams"  # at the sweep root: where earlier releases wrote it (run '.')


def hparam_domains(points: list[tuple[str, Any]], swept: dict[str, list[str]],
                   overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each hyper-parameter (a config leaf, named as the runs' HParams sessions name it) with the values the
    sweep gives it; the leaves a swept key sets are marked as differing."""
    from dltrain.run.assemble import flat_hparams

    flats = [(key, flat_hparams(cfg)) for key, cfg in points if cfg is not None]
    values: dict[str, list[Any]] = {}
    for _, flat in flats:
        for name, value in flat.items():
            seen = values.setdefault(name, [])
            if value not in seen:
                seen.append(value)
    domains: dict[str, dict[str, Any]] = {name: {"values": vals, "differs": False} for name, vals in values.items()}
    for key, listed in swept.items():
        leaf = next((n for n in (key, f"{key}.name") if n in values), None)  # optim.lr; optim=adam: optim.name
        if leaf:
            names = [leaf]
        else:  # e.g. experiment=a,b: the leaves that change with this key alone
            mine = [flat for k, flat in flats if k in ("", key)]
            names = [n for n in values if len({repr(flat.get(n)) for flat in mine}) > 1]
        if not listed and leaf:  # an interval: its bounds are the domain
            sweep = overrides[key].value()
            domains[leaf] = {"interval": [float(sweep.start), float(sweep.end)], "differs": True}
        for name in names:
            domains[name]["differs"] = True
    return domains


@dataclass(frozen=True)
class Monitored:
    """What a sweep's jobs are judged by: the monitored metric, the task's metric names, and early_stopping.mode
    resolved for it (None when the parent cannot tell: the job reports why)."""

    monitor: str = "val/loss"
    names: tuple[str, ...] = ("loss",)
    mode: str | None = None
    warning: str | None = None  # an explicit mode that contradicts the task's direction


def monitored(cfg: dict[str, Any] | None, project: Path | None = None) -> Monitored:
    """The monitored metric of a sweep's first point and the task's metric names, from the config and the
    registries alone: the sweep's parent builds no data (data.task=auto: see `tasks_logging`)."""
    try:
        from dltrain.core.tasks import build_task, monitor_mode
        from dltrain.run.config import RunConfig
        from dltrain.run.door import task_name as run_task

        config = RunConfig.load(cfg, project)  # the project's plugins: its data sets and tasks
        monitor = config.early_stopping.best.get("monitor", "val/loss")
        task_name = run_task(config.data, config.task)
        if task_name is None:
            task, names = tasks_logging(monitor)
        else:
            task = build_task(task_name, loss=config.task.loss, label_smoothing=config.task.label_smoothing,
                              denoise=config.task.denoise)
            names = ("loss", *task.metric_names, *task.derived_names)
    except Exception:  # noqa: BLE001  (the job itself reports what is wrong; the columns fall back to the loss)
        return Monitored()
    try:
        mode, warning = monitor_mode(config.early_stopping.best.get("mode", "auto"), monitor, task,
                                     task_name or "auto")
    except ConfigError:  # auto on a metric of unknown direction: each job says so in one line
        return Monitored(monitor, names)
    return Monitored(monitor, names, mode, warning)


def tasks_logging(monitor: str) -> tuple[Any, tuple[str, ...]]:
    """For data that learns its task from its files (data.task=auto): the registered tasks that log the monitored
    metric. One: it and its metric names; several: the loss and that metric, and one of them for the metric's
    direction where they all agree on it (acc: higher is better for every task that logs it)."""
    from dltrain.core.tasks import TASKS, build_task, metric_direction

    metric, found = monitor.split("/", 1)[-1], []
    for name in TASKS.names():
        try:
            task = build_task(name)
        except Exception:  # noqa: BLE001  (a user's task that needs other options)
            continue
        if metric in ("loss", *task.metric_names, *task.derived_names):
            found.append(task)
    if len(found) == 1:
        return found[0], ("loss", *found[0].metric_names, *found[0].derived_names)
    agree = len({metric_direction(task, monitor) for task in found}) == 1
    return found[0] if found and agree else None, tuple(dict.fromkeys(("loss", metric)))


def metric_columns(watched: Monitored) -> list[list[str]]:
    """The HParams metric columns, first five shown: the monitored metric's best, the test metrics, then the last
    epoch's val and train values (the last points of those curves)."""
    names = watched.names
    ordered = [n for n in names if n != "loss"] + ["loss"]
    columns = [[best_tag(watched.monitor), f"best/{watched.monitor}"]]
    columns += [[board_tag(f"test/{n}"), f"test/{n}"] for n in ordered]
    columns += [[f"val/{n}", f"final/val/{n}"] for n in names]
    columns += [["train/loss", "final/train/loss"]]
    return columns


def write_root(root: Path, swept_now: dict[str, list[str]], hparams_now: dict[str, dict[str, Any]],
               metrics_now: list[list[str]]) -> None:
    """Before the first job: this run of the sweep's plan (swept key -> values, the HParams domains, the metric
    columns) at the sweep root, merged with a previous run's, and the experiment in every job folder already there
    (a re-run's new values widen the domains of the finished jobs' copies too)."""
    from dltrain.core.files import write_json_atomic

    root.mkdir(parents=True, exist_ok=True)
    previous = read_plan(root)
    hparams, metrics = merge(previous, hparams_now, metrics_now)
    swept = dict(previous.get("swept") or {})
    for key, values in swept_now.items():
        swept[key] = [*swept.get(key, []), *(v for v in values if v not in swept.get(key, []))]
    write_json_atomic(root / PLAN_FILE, {"swept": swept, "hparams": hparams, "metrics": metrics})
    for old in root.glob(OLD_EXPERIMENTS):
        old.unlink(missing_ok=True)
    for job in sorted({path.parent for path in root.rglob("events.out.tfevents.*")} - {root}):
        write_experiment(job, hparams, metrics)


def merge(previous: dict[str, Any], hparams_now: dict[str, dict[str, Any]],
          metrics_now: list[list[str]]) -> tuple[dict[str, Any], list[list[str]]]:
    """A re-run into the same folder that adds values widens the domains; nothing already there is dropped."""
    hparams = {name: dict(spec) for name, spec in (previous.get("hparams") or {}).items()}
    for name, spec in hparams_now.items():
        old = hparams.get(name)
        if old is None:
            hparams[name] = dict(spec)
            continue
        differs = bool(old.get("differs")) or bool(spec.get("differs"))  # swept once: swept
        if "interval" in old or "interval" in spec:
            bounds = [b for s in (old, spec) for b in (s.get("interval") or
                      [v for v in s.get("values", []) if isinstance(v, (int, float)) and not isinstance(v, bool)])]
            hparams[name] = {"interval": [min(bounds), max(bounds)], "differs": differs} if bounds else old
        else:
            values = [*old.get("values", []), *(v for v in spec.get("values", []) if v not in old.get("values", []))]
            hparams[name] = {"values": values, "differs": differs}
    today = {shown: [tag, shown] for tag, shown in metrics_now}  # a column an earlier release tagged otherwise
    metrics: list[list[str]] = []  # (test/acc, now z_more/test/acc) keeps its place under today's tag
    for tag, shown in previous.get("metrics") or []:
        if (column := today.get(shown, [tag, shown])) not in metrics:
            metrics.append(column)
    metrics += [m for m in metrics_now if m not in metrics]
    return hparams, metrics
