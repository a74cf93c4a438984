"""Sweeps (`dltrain -m`): what a sweep varies, how its jobs are named, what TensorBoard's HParams tab is told
before the first job, and what the terminal shows (one line per finished job, then the table of the sweep).

The HParams experiment itself is written by dltrain/hparams.py (into each job's folder, not the root: a folder
with an event file is a TensorBoard run); the `runs` table by dltrain/runs_table.py.
The parent process plans the sweep from the command line (Hydra's own override parser) and from an
experiment's `hydra.sweeper.params`: the swept keys (several values) name the jobs, the single-valued ones are
left out of the names. Before the first job it writes, at the sweep root, `sweep.json` (the plan: each
hyper-parameter's domain, the swept ones marked as differing, and the metric columns), from which the HParams
experiment is written with tensorboard's own `summary_v2.hparams_config_pb`. Jobs, in whatever launcher process,
get what they need of the plan with the job function (sweep/jobs.py `job_function`; their DDP workers from the
environment, core/env.py) and record how they ended in the sweep folder (dltrain/ledger.py). The table at the
end is cli/main.py's (`finish`).
Nothing here imports torch at module level: `dltrain --help` and the sub-commands stay fast.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from dltrain.core import env
from dltrain.core.metrics_file import number, status_of
from dltrain.run.overrides import quoted
from dltrain.run.points import Points, compose_points, is_hydra_key
from dltrain.sweep.command_line import SweepPlan  # noqa: F401  (its home before; tests import it here)
from dltrain.sweep.hparams import hparam_domains, metric_columns, monitored, write_root
from dltrain.sweep.study import study_direction

SQ = "'"  # Hydra's single quotes: the sweep's own overrides read as they always did


# ---- the plan (parent process) -------------------------------------------------------------------------------

def plan(args: list[str], composed: Points | None = None, project: Path | None = None) -> SweepPlan:
    """Plan the sweep that `dltrain -m ARGS` runs from its points as the up-front check composed them (composed
    here when not given); `project`: the project whose plugins the configs name."""
    composed = composed or compose_points(args)
    if composed.hydra is None or not composed.points:  # nothing composes here: let Hydra run (and report) it
        return SweepPlan(None, {}, [], None, 0)
    hydra_cfg = composed.hydra
    task_overrides = {k: o for k, o in composed.overrides.items() if not is_hydra_key(k)}
    swept = {k: (list(o.sweep_string_iterator()) if o.is_discrete_sweep() else [])
             for k, o in task_overrides.items() if o.is_sweep_override()}
    single = [k for k, o in task_overrides.items() if not o.is_sweep_override()]
    basic = str(hydra_cfg.get("sweeper", {}).get("_target_", "")).endswith("BasicSweeper")
    jobs = math.prod(len(v) for v in swept.values()) if basic and all(swept.values()) else None
    lines = {k: [f"{o.get_key_element()}={v}" for v in (swept[k] or ["?"])] if k in swept else
                [o.input_line or k] for k, o in task_overrides.items()}
    named = [k for k in task_overrides if k in swept] if swept else list(task_overrides)
    width = sum(max(len(line) for line in lines[k]) for k in named) + max(len(named) - 1, 0)
    root = sweep_root(hydra_cfg)
    result = SweepPlan(root, swept, single, jobs, width)
    result.hydra_args = hydra_overrides(args, hydra_cfg, root, single if swept else [])
    if swept:
        result.hparams = hparam_domains(composed.points, swept, task_overrides)
        watched = monitored(composed.points[0][1], project)
        result.metrics = metric_columns(watched)
        result.hydra_args += study_direction(args, hydra_cfg, watched)  # may refuse: before any job
        if watched.warning:  # the jobs' own warning goes to their logs
            print(f"dltrain: warning: {watched.warning}", file=sys.stderr, flush=True)
    return result


def sweep_root(hydra_cfg: Any) -> Path | None:
    from omegaconf import OmegaConf

    try:
        return Path(str(OmegaConf.select(hydra_cfg, "sweep.dir")))
    except Exception:  # noqa: BLE001  (e.g. ${hydra:...} in the folder name: only a job can resolve it)
        return None


def hydra_overrides(args: list[str], hydra_cfg: Any, root: Path | None, single: list[str]) -> list[str]:
    """The sweep folder fixed now (so the parent knows it before the first job), single-valued keys left out of
    the job names, and each job's log records to its dltrain.log only (its output goes there too)."""
    def given(prefix: str) -> bool:
        return any(a.startswith(prefix) for a in args)

    extra = []
    if root is not None and not given("hydra.sweep.dir="):
        extra.append(f"hydra.sweep.dir={quoted(str(root), SQ)}")
    if single and not given("hydra.job.config.override_dirname.exclude_keys="):
        excluded = [*hydra_cfg.job.config.override_dirname.exclude_keys, *single]
        extra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(quoted(k, SQ) for k in excluded)}]")
    job_logging = hydra_cfg.get("job_logging") or {}
    if "file" in (job_logging.get("handlers") or {}) and (job_logging.get("root") or {}).get("handlers") is not None \
            and not given("hydra.job_logging") and not given("hydra/job_logging"):
        extra.append("hydra.job_logging.root.handlers=[file]")
    return extra


def start(sweep: SweepPlan) -> None:
    """Before the first job: the plan at the sweep root (merged with a previous run's), the HParams experiment,
    the environment the jobs read, and one header line."""
    env.set_sweep(sweep.for_jobs())  # for the DDP workers of its jobs (their TensorBoard runs: hparams.trial_id)
    if sweep.root is not None and sweep.swept:
        try:
            write_root(sweep.root, sweep.swept, sweep.hparams, sweep.metrics)
        except OSError as err:
            print(f"dltrain: warning: could not write the HParams experiment in {sweep.root}: {err}", file=sys.stderr)
    what = " x ".join(f"{k} ({len(v)})" if v else k for k, v in sweep.swept.items()) or "nothing swept"
    count = f"{sweep.jobs} jobs" if sweep.jobs is not None else "values picked by the sweeper"
    where = f" in {sweep.root}" if sweep.root else ""
    print(f"sweep: {count}, {what}{where}\none line per job as it ends; its epochs go to <job>/dltrain.log", flush=True)


def job_ended(run_dir: Path, name: str, num: int, sweep: dict[str, Any], report: dict[str, Any],
              seconds: float | None, note: str = "") -> None:
    """One line for the terminal (printed here in the sweep's own process, else by it) and one record for the
    sweep, as the job ends. `sweep`: SweepPlan.for_jobs() ({} when only Hydra knows the sweep)."""
    from dltrain.sweep import ledger

    if not env.is_rank0():  # one of a job's several tasks (submitit's tasks_per_node): rank 0 reports
        return
    status = status_of(report)
    line = job_line(num, sweep, name, report, status, seconds, note)
    if ledger.in_sweep_process() or not env.ledger()[0]:
        print(line, flush=True)
    root = sweep.get("root")
    if not root and run_dir.as_posix().endswith(f"/{name}"):  # the sweep folder only a job could resolve
        root = run_dir.as_posix()[:-len(name) - 1]
    ledger.record(num, {"name": name, "status": status, "run_dir": str(run_dir), "root": root,
                        "error": report.get("error"), "line": line})


def main_test_metric(test: dict[str, Any]) -> tuple[str, Any]:
    """The test metric a one-line summary shows: the task's first metric (test/acc, test/mse, ...), else the loss."""
    for tag, value in test.items():
        if tag != "test/loss":
            return tag, value
    return ("test/loss", test["test/loss"]) if "test/loss" in test else ("", None)


def job_line(num: int, sweep: dict[str, Any], name: str, report: dict[str, Any], status: str,
             seconds: float | None, note: str = "") -> str:
    """e.g. `[2/6] optim=sgd,sched=exponential  best val/loss  0.1893  test/acc  0.9417  completed    3.1s`;
    a failed job keeps the columns (dashes) and ends with its error."""
    total = sweep.get("jobs")
    count = (f"[{num + 1}/{total}]".rjust(len(f"[{total}/{total}]"))) if total else f"[{num + 1}]"
    monitor = report.get("monitor") or sweep.get("monitor") or "?"
    tag, value = main_test_metric(report.get("test") or {})
    tag = tag or sweep.get("test") or ""
    parts = [f"{count} {name.ljust(int(sweep.get('width') or 0))}", f"best {monitor} {number(report.get('best')):>7}"]
    if tag:
        parts.append(f"{tag} {number(value):>7}")
    parts.append(f"{status:<9}  {number(seconds, 1):>5}s")
    if status == "failed":
        parts.append(str(report.get("error") or ""))
    if note:
        parts.append(note)
    return "  ".join(parts)
