"""The HParams experiment of a sweep, written at its root before the first job (tensorboard's own
`summary_v2.hparams_config_pb`): each hyper-parameter's domain with the swept ones marked as differing, and the
metric columns; merged with what a previous run of the same sweep wrote (`sweep.json`), so a re-run that adds
values widens the domains."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dltrain.sweep import SweepPlan

PLAN_FILE = "sweep.json"  # at the sweep root: swept keys, HParams domains and metric columns (merged on re-runs)
EXPERIMENT_SUFFIX = ".hparams"  # the root's event file that holds only the HParams experiment


def best_tag(monitor: str) -> str:
    """The scalar tag of the monitored metric's running best: a curve beside the monitor's own (val/loss_best
    sorts right after val/loss), whose last value is the run's best and the HParams column best/<monitor>."""
    return f"{monitor}_best"



def hparam_domains(points: list[tuple[str, Any]], swept: dict[str, list[str]],
                   overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each hyper-parameter (a config leaf, named as the runs' HParams sessions name it) with the values the
    sweep gives it; the leaves a swept key sets are marked as differing."""
    from dltrain.build import flat_hparams

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


def metric_columns(cfg: dict[str, Any] | None) -> list[list[str]]:
    """The HParams metric columns, first five shown: the monitored metric's best, the test metrics, then the last
    epoch's val and train values (the last points of those curves). The task's metric names need the data's task
    when `task` is null: its registration declares it, or else the first point's data is built once here."""
    monitor, names = "val/loss", ("loss",)
    try:
        from dltrain.config import RunConfig
        from dltrain.plugins import PROJECT_ENV

        project = os.environ.get(PROJECT_ENV)
        config = RunConfig.load(cfg, Path(project) if project else None)  # the project's plugins: its data sets
        monitor = config.early_stopping.best.get("monitor", monitor)
        from dltrain.door import task_name as run_task
        from dltrain.tasks import build_task

        task_name = run_task(config.data, config.task)
        if task_name is None:
            from dltrain.data import DATASETS

            task_name = DATASETS.build(config.data.spec, seed=config.trainer.seed).task
        task = build_task(task_name, loss=config.task.loss, label_smoothing=config.task.label_smoothing,
                          denoise=config.task.denoise)
        names = ("loss", *task.metric_names, *task.derived_names)
    except Exception:  # noqa: BLE001  (the job itself reports what is wrong; the columns fall back to the loss)
        pass
    ordered = [n for n in names if n != "loss"] + ["loss"]
    columns = [[best_tag(monitor), f"best/{monitor}"]]
    columns += [[f"test/{n}", f"test/{n}"] for n in ordered]
    columns += [[f"val/{n}", f"final/val/{n}"] for n in names]
    columns += [["train/loss", "final/train/loss"]]
    return columns


def write_root(sweep: SweepPlan) -> None:
    from dltrain.files import write_json_atomic

    root = sweep.root
    root.mkdir(parents=True, exist_ok=True)
    previous = read_plan(root)
    hparams, metrics = merge(previous, sweep)
    swept = dict(previous.get("swept") or {})
    for key, values in sweep.swept.items():
        swept[key] = [*swept.get(key, []), *(v for v in values if v not in swept.get(key, []))]
    unchanged = previous.get("hparams") == hparams and previous.get("metrics") == metrics
    if not unchanged or not list(root.glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}")):
        write_experiment(root, hparams, metrics)
    write_json_atomic(root / PLAN_FILE, {"swept": swept, "hparams": hparams, "metrics": metrics})


def read_plan(root: Path) -> dict[str, Any]:
    try:
        found = json.loads((root / PLAN_FILE).read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def merge(previous: dict[str, Any], sweep: SweepPlan) -> tuple[dict[str, Any], list[list[str]]]:
    """A re-run into the same folder that adds values widens the domains; nothing already there is dropped."""
    hparams = {name: dict(spec) for name, spec in (previous.get("hparams") or {}).items()}
    for name, spec in sweep.hparams.items():
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
    metrics = [list(m) for m in previous.get("metrics") or []]
    metrics += [m for m in sweep.metrics if m not in metrics]
    return hparams, metrics


def write_experiment(root: Path, hparams: dict[str, dict[str, Any]], metrics: list[list[str]]) -> None:
    """The HParams experiment as its own event file at the sweep root (TensorBoard run '.'), replacing an
    earlier one: TensorBoard keeps the first experiment it reads, so there is only ever one."""
    import time

    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    infos = [hp.HParam(name, domain(spec)) for name, spec in hparams.items()]
    summary = hp.hparams_config_pb(infos, [hp.Metric(tag, display_name=shown) for tag, shown in metrics],
                                   time_created_secs=time.time())
    value = summary.value[0]  # summary_v2's HParam has no `differs`: set it on the experiment proto
    experiment = metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
    for info in experiment.hparam_infos:
        info.differs = bool(hparams[info.name].get("differs"))
    value.metadata.CopyFrom(metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment)))
    pattern = f"events.out.tfevents.*{EXPERIMENT_SUFFIX}"
    before = set(root.glob(pattern))
    writer = EventFileWriter(str(root), filename_suffix=EXPERIMENT_SUFFIX)
    writer.add_event(Event(wall_time=time.time(), step=0, summary=summary))
    writer.close()
    if set(root.glob(pattern)) - before:  # the new one is there: the old ones go
        for old in before:
            old.unlink(missing_ok=True)


def domain(spec: dict[str, Any]) -> Any:
    from tensorboard.plugins.hparams import summary_v2 as hp

    if "interval" in spec:
        return hp.RealInterval(*(float(b) for b in spec["interval"]))
    values = spec.get("values") or []
    if all(isinstance(v, bool) for v in values) or all(isinstance(v, str) for v in values):
        return hp.Discrete(values)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return hp.Discrete([float(v) for v in values])
    return hp.Discrete([str(v) for v in values])


# ---- a job (any launcher process) ----------------------------------------------------------------------------
