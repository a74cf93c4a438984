"""TensorBoard's HParams records, written with tensorboard's own `summary_v2` protobufs: a run's session (its
hyper-parameter values, grouped under its Trial ID) and a sweep's experiment (each hyper-parameter's domain, the
swept ones marked as differing, and the metric columns). What a sweep plans is dltrain/sweep/hparams.py's; here is
how a run writes its records and finds the sweep it belongs to (the root in DLTRAIN_SWEEP, the plan in its
sweep.json).

TensorBoard's HParams plugin takes the experiment from whichever run holds one (the first it lists), and every
folder holding an event file is a run: an experiment at the sweep root was a run named `.` with no curves, first
in every run list. So each job's folder holds the experiment in a small event file of its own
(`EXPERIMENT_FILE`), written by the job as it starts and rewritten in every job folder whenever the sweep starts
again, so that all copies are the same. Its name sorts before the job's own event files, which TensorBoard reads
in name order (the job's live file stays the last one).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dltrain.core import env
from dltrain.core.event_files import write_events

PLAN_FILE = "sweep.json"  # at the sweep root: swept keys, HParams domains and metric columns (merged on re-runs)
EXPERIMENT_FILE = "events.out.tfevents.0000000000.experiment.hparams"  # in each job folder: the experiment alone


def sweep_root() -> Path | None:
    """The folder of the sweep this process runs a job of (None: not a sweep, or its folder is not known here)."""
    root = env.sweep().get("root")
    return Path(root) if isinstance(root, str) and root else None


def read_plan(root: Path) -> dict[str, Any]:
    """The sweep's plan as its sweep.json holds it ({} where there is none, or it is damaged)."""
    try:
        found = json.loads((root / PLAN_FILE).read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def trial_id(run_dir: Path) -> str:
    """The HParams session group (the table's Trial ID) of a run: a sweep job's name, its folder under the sweep
    (`optim=adam,sched=step`), else the run folder's name."""
    root = sweep_root()
    try:
        return run_dir.resolve().relative_to(root.resolve()).as_posix() if root else run_dir.name
    except ValueError:
        return run_dir.name


def session(hparams: dict[str, Any], run_dir: Path) -> Any:
    """The run's HParams session: its values, grouped under its trial id rather than TensorBoard's default hash of
    the values (a summary protobuf for the run's own event file)."""
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb

    return hparams_pb(hparams, trial_id=trial_id(run_dir))


def join_sweep(run_dir: Path) -> None:
    """A sweep's job, as it starts: the sweep's experiment into its own folder (see the module's docstring)."""
    root = sweep_root()
    plan = read_plan(root) if root else {}
    if plan.get("hparams") and root.resolve() in run_dir.resolve().parents:
        write_experiment(run_dir, plan["hparams"], plan.get("metrics") or [])


def write_experiment(folder: Path, hparams: dict[str, dict[str, Any]], metrics: list[list[str]]) -> None:
    """The HParams experiment (hyper-parameter name -> {values | interval, differs}; [tag, display name] per metric
    column) as the event file `EXPERIMENT_FILE` in `folder`, replaced atomically."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    infos = [hp.HParam(name, domain(spec)) for name, spec in hparams.items()]
    summary = hp.hparams_config_pb(infos, [hp.Metric(tag, display_name=shown) for tag, shown in metrics],
                                   time_created_secs=time.time())
    value = summary.value[0]  # summary_v2's HParam has no `differs`: set it on the experiment proto
    experiment = metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
    for info in experiment.hparam_infos:
        info.differs = bool(hparams[info.name].get("differs"))
    value.metadata.CopyFrom(metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment)))
    events = [Event(wall_time=time.time(), file_version="brain.Event:2"),  # as TensorBoard's own writer begins
              Event(wall_time=time.time(), step=0, summary=summary)]
    write_events(folder / EXPERIMENT_FILE, [event.SerializeToString() for event in events])


def domain(spec: dict[str, Any]) -> Any:
    """A hyper-parameter's HParams domain: an interval's bounds, else its values (all numbers, all strings or all
    booleans; a mix as text)."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    if "interval" in spec:
        return hp.RealInterval(*(float(b) for b in spec["interval"]))
    values = spec.get("values") or []
    if all(isinstance(v, bool) for v in values) or all(isinstance(v, str) for v in values):
        return hp.Discrete(values)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return hp.Discrete([float(v) for v in values])
    return hp.Discrete([str(v) for v in values])
