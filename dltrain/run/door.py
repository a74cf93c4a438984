"""The door's checks across groups, after each group parsed on its own (config.py,
into the types of config_types.py; config.py calls this module, never the other way): what they decide
together without building anything. The task (the configured one, else the data's own as its registration
declares it) gives the metrics the monitor must be one of, and takes the top-level loss options; the data's
files (exist, a CSV's header) are checked by its registration's `inputs`, and trainer.init_from's checkpoint (exists,
loads safely, a model of its kind: init_from.check_at_door). When only the data can tell its task
(`data.task: auto`, a user's builder that declares none) the monitor must be a metric of some task here, and the
build checks it again against the real one.
"""
from __future__ import annotations

from typing import Any

from dltrain.core.registry import ConfigError, Problems, check
from dltrain.core.tasks import TASKS, Task, build_task
from dltrain.data import DATASETS
from dltrain.run import init_from
from dltrain.run.config_types import DataConfig, TaskConfig


def metric_tags(task: Task) -> list[str]:
    """Every metric a run of `task` logs that early stopping can monitor: train/ and val/ of each."""
    names = ("loss", *task.metric_names, *task.derived_names)
    return [f"{split}/{name}" for split in ("train", "val") for name in names]


def data_task(data: DataConfig) -> str | None:
    """The task the data set trains on, as its registration declares it (None: only the built data tells)."""
    declared = DATASETS.traits(data.spec.name).get("task")
    if callable(declared):
        declared = declared(**DATASETS.options(data.spec.name, data.spec.kwargs))
    return declared if isinstance(declared, str) else None


def task_name(data: DataConfig, task: TaskConfig) -> str | None:
    """The run's task: the configured one, else the data's declared one (None when neither is known yet)."""
    return task.name or data_task(data)


def any_task_tags() -> list[str]:
    """The metrics of every registered task (for a run whose task only its data will tell)."""
    tags: list[str] = []
    for name in TASKS.names():
        try:
            tags += [t for t in metric_tags(build_task(name)) if t not in tags]
        except Exception:  # noqa: BLE001  (a user's task that needs other options: the build checks its metrics)
            continue
    return tags


def check_across(cfg: dict[str, Any], parsed: dict[str, Any], inputs: bool) -> None:
    """Every cross-group problem, one line each, among the groups that parsed (one ConfigError). The monitor is read
    from the raw `cfg`: a bad patience beside it must not hide it."""
    problems = Problems()
    if inputs and "trainer" in parsed and "model" in parsed:  # the source file of trainer.init_from
        with problems.collect():
            init_from.check_at_door(parsed["trainer"], parsed["model"].name)
    data: DataConfig | None = parsed.get("data")
    if data is not None and inputs:
        with problems.collect():
            DATASETS.check_inputs(data.spec)
    if data is None or "task" not in parsed:
        problems.raise_if_any()
        return
    config: TaskConfig = parsed["task"]
    name = task_name(data, config)
    task = None
    with problems.collect():
        if name is not None:
            task = build_task(name, loss=config.loss, label_smoothing=config.label_smoothing, denoise=config.denoise)
    monitor = (cfg.get("early_stopping") or {}).get("monitor", "val/loss")
    if isinstance(monitor, str) and monitor.startswith(("train/", "val/")) and (task is not None or name is None):
        with problems.collect():
            check_monitor(monitor, task, name)
    problems.raise_if_any()


def check_monitor(monitor: str, task: Task | None, name: str | None) -> None:
    """The monitored metric is one the run logs (of its task; of some task while the data's task is unknown)."""
    if task is not None:
        tags = metric_tags(task)
        check(monitor in tags, f"early_stopping.monitor={monitor} is not a metric of this run (task={name}); "
              f"valid: {', '.join(tags)}")
        return
    tags = any_task_tags()
    if monitor not in tags:
        raise ConfigError(f"early_stopping.monitor={monitor} is not a metric of any task; valid: {', '.join(tags)}")
