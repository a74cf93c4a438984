"""Sweeps (`dltrain -m`): what a sweep varies, how its jobs are named, what TensorBoard's HParams tab is told
before the first job, and what the terminal shows (one line per finished job, then the table of the sweep).

The HParams experiment itself is written by dltrain/hparams.py (into each job's folder, not the root: a folder
with an event file is a TensorBoard run); the `runs` table by dltrain/runs_table.py.
The parent process plans the sweep from the command line (Hydra's own override parser) and from an
experiment's `hydra.sweeper.params`: the swept keys (several values) name the jobs, the single-valued ones are
left out of the names. Before the first job it writes, at the sweep root, `sweep.json` (the plan: each
hyper-parameter's domain, the swept ones marked as differing, and the metric columns), from which the HParams
experiment is written with tensorboard's own `summary_v2.hparams_config_pb`. Jobs, in whatever launcher process,
learn the plan from the DLTRAIN_SWEEP environment variable and record how they ended in the sweep folder
(dltrain/ledger.py).
Nothing here imports torch at module level: `dltrain --help` and the sub-commands stay fast.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltrain.core.hparams import SWEEP_ENV  # JSON {root, jobs, width}: the plan as the jobs need it
from dltrain.core.metrics_file import ENDED_OK, number, status_of
from dltrain.sweep.hparams import hparam_domains, metric_columns, monitored, write_root
from dltrain.sweep.study import study_direction


# ---- the plan (parent process) -------------------------------------------------------------------------------

@dataclass
class SweepPlan:
    root: Path | None  # the sweep folder, fixed before Hydra starts (None: it could not be resolved here)
    swept: dict[str, list[str]]  # swept key -> its values as listed ([] for an interval: the sweeper picks)
    single: list[str]  # keys given one value: left out of the job names
    jobs: int | None  # how many jobs Hydra's basic sweeper will run (None: another sweeper decides)
    width: int  # the longest job name, for aligned per-job lines
    hydra_args: list[str] = field(default_factory=list)  # extra overrides for Hydra (sweep dir, job names, logs)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {values|interval, differs}
    metrics: list[list[str]] = field(default_factory=list)  # [tag, display name] per HParams metric column

    def env(self) -> str:
        shown = {"monitor": self.metrics[0][1].removeprefix("best/"), "test": self.metrics[1][1]} if self.metrics else {}
        return json.dumps({"root": str(self.root) if self.root else None, "jobs": self.jobs, "width": self.width,
                           **shown})


def plan(args: list[str]) -> SweepPlan:
    """Plan the sweep that `dltrain -m ARGS` runs (ARGS already checked by cli.check_sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    given = {o.key_or_group: o for o in parser.parse_overrides(args)}
    composed = compose_points(given, parser)
    if composed is None:  # nothing composes here: let Hydra run (and report) it as it is
        return SweepPlan(None, {}, [], None, 0)
    hydra_cfg, overrides, points = composed
    task_overrides = {k: o for k, o in overrides.items() if not is_hydra_key(k)}
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
        result.hparams = hparam_domains(points, swept, task_overrides)
        watched = monitored(points[0][1])
        result.metrics = metric_columns(watched)
        result.hydra_args += study_direction(args, hydra_cfg, watched)  # may refuse: before any job
        if watched.warning:  # the jobs' own warning goes to their logs
            print(f"dltrain: warning: {watched.warning}", file=sys.stderr, flush=True)
    return result


def is_hydra_key(key: str) -> bool:
    return key.startswith(("hydra.", "hydra/")) or key == "hydra"


def compose_points(given: dict[str, Any], parser: Any) -> tuple[Any, dict[str, Any], list[tuple[str, Any]]] | None:
    """Hydra's config for the sweep, every override in force (the command line's, over an experiment's
    `hydra.sweeper.params`), and the composed task config of each point that sets one swept value (the others at
    their first value): (swept key or '', plain config) pairs, the first point first."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dltrain.run.conf_dirs import config_dir

    def first(override: Any) -> str | None:
        if not override.is_sweep_override():
            return override.input_line
        if override.is_discrete_sweep():
            return f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"
        return None  # an interval: the config's own value stands in

    def lines(overrides: dict[str, Any], hydra: bool) -> list[str]:
        return [line for k, o in overrides.items() if (line := first(o)) is not None
                and (hydra or not is_hydra_key(k) or k == "hydra.searchpath")]

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        def with_hydra(overrides: dict[str, Any]) -> Any:
            try:
                return compose("config", overrides=lines(overrides, True), return_hydra_config=True)
            except Exception:  # noqa: BLE001  (a launcher/sweeper plugin's keys: compose without Hydra's)
                return compose("config", overrides=lines(overrides, False), return_hydra_config=True)

        try:
            cfg = with_hydra(given)
            params = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False).get("params") or {}
            overrides = dict(given)
            if params:  # an experiment's own sweep; the command line wins where both name a key
                from_params = {o.key_or_group: o for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
                overrides = {**from_params, **given}
                cfg = with_hydra(overrides)
        except Exception:  # noqa: BLE001  (Hydra itself reports what does not compose)
            return None
        hydra_cfg = cfg.hydra
        base = plain_task(cfg)
        points: list[tuple[str, Any]] = [("", base)]
        task_lines = lines(overrides, False)
        for key, override in overrides.items():
            if is_hydra_key(key) or not override.is_sweep_override() or not override.is_discrete_sweep():
                continue
            at = task_lines.index(first(override))
            for value in list(override.sweep_string_iterator())[1:]:
                point = [*task_lines[:at], f"{override.get_key_element()}={value}", *task_lines[at + 1:]]
                try:
                    points.append((key, plain_task(compose("config", overrides=point))))
                except Exception:  # noqa: BLE001  (a bad value fails its own job; the others still compare)
                    continue
    return hydra_cfg, overrides, points


def plain_task(cfg: Any) -> dict[str, Any] | None:
    from omegaconf import OmegaConf

    try:  # without Hydra's own node: its ${hydra:...} values resolve only inside a job
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    except Exception:  # noqa: BLE001
        return None


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
        extra.append(f"hydra.sweep.dir={quote(str(root))}")
    if single and not given("hydra.job.config.override_dirname.exclude_keys="):
        excluded = [*hydra_cfg.job.config.override_dirname.exclude_keys, *single]
        extra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(quote(k) for k in excluded)}]")
    job_logging = hydra_cfg.get("job_logging") or {}
    if "file" in (job_logging.get("handlers") or {}) and (job_logging.get("root") or {}).get("handlers") is not None \
            and not given("hydra.job_logging") and not given("hydra/job_logging"):
        extra.append("hydra.job_logging.root.handlers=[file]")
    return extra


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def start(sweep: SweepPlan) -> None:
    """Before the first job: the plan at the sweep root (merged with a previous run's), the HParams experiment,
    the environment the jobs read, and one header line."""
    os.environ[SWEEP_ENV] = sweep.env()
    if sweep.root is not None and sweep.swept:
        try:
            write_root(sweep.root, sweep.swept, sweep.hparams, sweep.metrics)
        except OSError as err:
            print(f"dltrain: warning: could not write the HParams experiment in {sweep.root}: {err}", file=sys.stderr)
    what = " x ".join(f"{k} ({len(v)})" if v else k for k, v in sweep.swept.items()) or "nothing swept"
    count = f"{sweep.jobs} jobs" if sweep.jobs is not None else "values picked by the sweeper"
    where = f" in {sweep.root}" if sweep.root else ""
    print(f"sweep: {count}, {what}{where}\none line per job as it ends; its epochs go to <job>/dltrain.log", flush=True)


def sweep_env() -> dict[str, Any]:
    try:
        found = json.loads(os.environ.get(SWEEP_ENV) or "{}")
        return found if isinstance(found, dict) else {}
    except ValueError:
        return {}


def job_ended(run_dir: Path, name: str, num: int, report: dict[str, Any], seconds: float | None,
              note: str = "") -> None:
    """One line for the terminal (printed here in the sweep's own process, else by it) and one record for the
    sweep, as the job ends."""
    from dltrain.sweep import ledger

    if os.environ.get("RANK", "0") != "0":  # one of a job's several tasks (submitit's tasks_per_node): rank 0 reports
        return
    env = sweep_env()
    status = status_of(report)
    line = job_line(num, env, name, report, status, seconds, note)
    if ledger.in_sweep_process() or not os.environ.get(ledger.LEDGER_ENV):
        print(line, flush=True)
    root = env.get("root")
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


def job_line(num: int, env: dict[str, Any], name: str, report: dict[str, Any], status: str,
             seconds: float | None, note: str = "") -> str:
    """e.g. `[2/6] optim=sgd,sched=exponential  best val/loss  0.1893  test/acc  0.9417  completed    3.1s`;
    a failed job keeps the columns (dashes) and ends with its error."""
    total = env.get("jobs")
    count = (f"[{num + 1}/{total}]".rjust(len(f"[{total}/{total}]"))) if total else f"[{num + 1}]"
    monitor = report.get("monitor") or env.get("monitor") or "?"
    tag, value = main_test_metric(report.get("test") or {})
    tag = tag or env.get("test") or ""
    parts = [f"{count} {name.ljust(int(env.get('width') or 0))}", f"best {monitor} {number(report.get('best')):>7}"]
    if tag:
        parts.append(f"{tag} {number(value):>7}")
    parts.append(f"{status:<9}  {number(seconds, 1):>5}s")
    if status == "failed":
        parts.append(str(report.get("error") or ""))
    if note:
        parts.append(note)
    return "  ".join(parts)


# ---- the end (parent process) --------------------------------------------------------------------------------

def finish(sweep: SweepPlan | None, records: list[dict[str, Any]]) -> None:
    """After the last job: the runs table of the sweep (best marked) and the command that opens it."""
    roots = {r.get("root") for r in records if r.get("root")}
    root = sweep.root if sweep is not None and sweep.root is not None else (Path(roots.pop()) if len(roots) == 1 else None)
    if root is None or not root.is_dir():
        return
    from dltrain.sweep.runs_table import runs_table, terminal_width

    ended = sum(r["status"] in ENDED_OK for r in records)
    print(f"\nsweep done: {len(records)} job(s), {ended} ran to their end, {len(records) - ended} failed", flush=True)
    lines = runs_table(root, terminal_width())
    print("\n".join(lines))
    print(f"open it: dltrain board {root}", flush=True)
