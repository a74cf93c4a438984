"""`dltrain plan [-m] OVERRIDES`: what a run or a sweep would do, without training it and without writing a file.

The command line is read and checked by the same front door as a run (cli/main.py), so a bad override is the same
one line and exit 2. A run's config is composed as Hydra composes it for the job, loaded with the project's
plugins and checked at the door (RunConfig.load), then planned by run/preview.py. A sweep's jobs are Hydra's
own: its basic sweeper's product of the overrides (BasicSweeper.split_arguments), each named as Hydra names the
job's folder (get_overrides_dirname, with the single-valued keys excluded as sweep/plan.py excludes them); each
is composed and checked alike, grouped as the vectorised launcher groups them (run/stacking.py plan_stacks, its
cap and its reasons for a job alone included), and each group's first job is measured once: a group's jobs share
the model, data, batch and optimizer, so a step takes about the same time in each (a penalty or a dropout rate
that differs changes it a little).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dltrain.core.registry import ConfigError
from dltrain.run.points import compose_checked, is_hydra_key, task_only
from dltrain.sweep.command_line import CommandLine, SweepPlan

NOT_STACKED = ("these groups train as stacks with hydra/launcher=vectorized; this sweep's launcher trains each job on "
               "its own")
PER_MEMBER = ("the optimizer's numbers, sched, reg, early_stopping, seed, max_epochs, label_smoothing, model.init, "
              "dropout")


def composed(arg_lists: list[list[str]], project: Path | None) -> list[Any]:
    """Each override list's RunConfig as a job would get it (composed, plugins loaded, checked at the door), or the
    ConfigError that job would fail with."""
    from hydra import initialize_config_dir

    from dltrain.core.conf_dirs import config_dir
    from dltrain.run.config import RunConfig, to_plain

    out: list[Any] = []
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for args in arg_lists:
            try:
                cfg, problem = compose_checked(task_only(args))
                if problem:
                    raise ConfigError(problem)
                out.append(RunConfig.load(to_plain(cfg), project))
            except ConfigError as err:
                out.append(err)
    return out


def errors(err: ConfigError) -> None:
    for problem in err.problems:
        print(f"dltrain: error: {problem}", file=sys.stderr, flush=True)


def show(line: CommandLine, sweep: SweepPlan | None) -> int:
    """Print the plan of the run (or, with -m, of the sweep) that `line` describes; the exit code (2: a config
    problem, printed as a run prints it)."""
    if line.multirun:
        return show_sweep(line, sweep)
    from dltrain.run.plan_text import describe
    from dltrain.run.preview import plan_run

    config = composed([line.rest], line.project)[0]
    try:
        if isinstance(config, ConfigError):
            raise config
        plan = plan_run(config)
    except ConfigError as err:
        errors(err)
        return 2
    for warning in plan.warnings:
        print(f"dltrain: warning: {warning}", file=sys.stderr, flush=True)
    given = " ".join(a for a in line.given if not a.startswith("hydra.searchpath="))
    print(f"plan of: dltrain {given}".rstrip() + "   (nothing trained, no files written)")
    print("\n".join(describe(plan)), flush=True)
    return 0


def sweep_jobs(line: CommandLine, sweep: SweepPlan) -> list[tuple[str, list[str]]]:
    """(name, overrides) of each job, in the order Hydra's basic sweeper launches them, named as it names their
    folders."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from dltrain.run.overrides import override_value

    points = line.points
    assert points is not None and points.hydra is not None
    task = [o for key, o in points.overrides.items() if not is_hydra_key(key)]
    jobs = BasicSweeper.split_arguments(task, None)[0]
    named = OmegaConf.select(points.hydra, "job.config.override_dirname")
    exclude = list(named.exclude_keys)
    for arg in sweep.hydra_args:  # the plan's own exclusion of single-valued keys
        if arg.startswith("hydra.job.config.override_dirname.exclude_keys="):
            exclude = list(override_value(arg))
    subdir = OmegaConf.to_container(points.hydra.sweep, resolve=False).get("subdir")
    parser = OverridesParser.create()
    search = [a for a in line.rest if a.startswith("hydra.searchpath=")]
    return [(get_overrides_dirname(parser.parse_overrides(job), exclude, named.item_sep, named.kv_sep)
             if "override_dirname" in str(subdir) else f"#{num}", [*job, *search]) for num, job in enumerate(jobs)]


def show_sweep(line: CommandLine, sweep: SweepPlan | None) -> int:
    """The jobs with a per-job estimate, how they would stack, and the total."""
    from dltrain.run.plan_text import seconds_text
    from dltrain.run.preview import TIMED_STEPS, plan_run

    if sweep is None or sweep.jobs is None or line.points is None or line.points.hydra is None:
        print("dltrain: error: this sweeper picks its values while it runs, so its jobs cannot be listed before; "
              "dltrain plan -m lists the jobs of Hydra's basic sweeper (plan one point without -m)", file=sys.stderr)
        return 2
    jobs = sweep_jobs(line, sweep)
    configs = composed([args for _, args in jobs], line.project)
    units = stack_units(configs, line)
    plans: dict[int, Any] = {}
    for unit in units:
        try:
            plans.update(dict.fromkeys(unit.jobs, plan_run(configs[unit.jobs[0]])))
        except ConfigError as err:  # the group's build fails (e.g. a model that cannot take the data)
            plans.update(dict.fromkeys(unit.jobs, err))
    print(header(sweep, line))
    width = max(len(name) for name, _ in jobs)
    total = 0.0
    for num, (name, _) in enumerate(jobs):
        plan = plans.get(num, configs[num])
        if isinstance(plan, ConfigError):
            print(f"  [{num + 1}/{len(jobs)}] {name.ljust(width)}  would fail: {'; '.join(plan.problems)}")
            continue
        seconds = plan.run_seconds(configs[num].trainer.max_epochs, built=False)
        total += seconds
        columns = job_text(plan, configs[num])
        print(f"  [{num + 1}/{len(jobs)}] {name.ljust(width)}  {columns}  ~{seconds_text(seconds)}")
    print(groups_text(units, plans, vectorized(line)))
    failed = sum(isinstance(plans.get(i, configs[i]), ConfigError) for i in range(len(jobs)))
    print(f"total ~{seconds_text(total)} for {len(jobs) - failed} job(s) (epochs and test), {launcher_text(line)}\n"
          f"  ESTIMATE from {TIMED_STEPS} timed steps of each group's first job; not counted: building each job's data and model, "
          "checkpoint and TensorBoard writes; early stopping may end jobs sooner")
    print(f"one job in full: dltrain plan {' '.join(a for a in jobs[0][1] if not a.startswith('hydra.'))}")
    return 2 if failed else 0


def header(sweep: SweepPlan, line: CommandLine) -> str:
    what = " × ".join(f"{k} ({len(v)})" for k, v in sweep.swept.items()) or "nothing swept"
    where = f" into {sweep.root}" if sweep.root else ""
    return f"plan of a sweep: {sweep.jobs} jobs, {what}{where}   (nothing trained, no files written)"


def job_text(plan: Any, config: Any) -> str:
    """A job's columns: parameters, steps, its learning rate (sparkline, first and last value), time per epoch."""
    import dataclasses

    from dltrain.run.assemble import make_settings
    from dltrain.run.lr_curve import lr_text, sample, sparkline
    from dltrain.run.plan_text import seconds_text

    parts = dataclasses.replace(plan.parts, config=config)
    settings = make_settings(parts, len(parts.data.train), plan.settings.lr_scales)
    epochs = config.trainer.max_epochs
    curve = sample(settings.lr_at, epochs * (plan.steps if settings.lr_per_step else 1), settings.lr_per_step)
    train, val = plan.epoch_seconds
    first, last = lr_text(curve.lrs[0]), lr_text(curve.lrs[-1])
    lr = first if first == last else f"{first}→{last}"
    return (f"{plan.params:>10,} params  {plan.steps:,} steps × {epochs} epochs  lr {sparkline(curve, 12)} "
            f"{lr:<15} ~{seconds_text(train + val)}/epoch")


def vectorized(line: CommandLine) -> bool:
    from omegaconf import OmegaConf

    return str(OmegaConf.select(line.points.hydra, "launcher._target_", default="")).endswith(".VectorizedLauncher")


def stack_units(configs: list[Any], line: CommandLine) -> list[Any]:
    """How the vectorised launcher would run the jobs that pass the door: its grouping, its cap
    (hydra.launcher.max_members, with that launcher) and its reasons for a job to train alone."""
    from omegaconf import OmegaConf

    from dltrain.run.stacked import why_alone
    from dltrain.run.stacking import plan_stacks
    from dltrain.sweep.vectorized import hydra_reason

    ok = [None if isinstance(c, ConfigError) else c for c in configs]
    hydra = line.points.hydra
    alone = [c and (hydra_reason(hydra) or why_alone(c)) for c in ok]
    cap = OmegaConf.select(hydra, "launcher.max_members", default=None) if vectorized(line) else None
    return plan_stacks([c and c.resolved for c in ok], alone, cap)


def groups_text(units: list[Any], plans: dict[int, Any], stacked: bool) -> str:
    """'would stack: N groups', each group's jobs by number (a job alone: why), and, unless this sweep's launcher
    is the vectorised one, that it trains each job on its own."""
    from dltrain.run.plan_text import memory_line
    from dltrain.run.stacking import unit_line

    lines = [f"{'stacks' if stacked else 'would stack'}: {len(units)} group(s) (a group's jobs differ only in "
             f"per-member keys: {PER_MEMBER})"]
    for k, unit in enumerate(units, 1):
        plan = plans.get(unit.jobs[0])
        each = "each " if unit.reason is None else ""
        memory = f", {each}~{memory_line(plan).split(':')[0].lstrip('~')}" if plan is not None and \
            not isinstance(plan, ConfigError) else ""
        lines.append(f"  group {k}: {unit_line(unit, unit.jobs)}{memory}")
    if not stacked:
        lines.append(f"  ({NOT_STACKED})")
    return "\n".join(lines)


def launcher_text(line: CommandLine) -> str:
    from omegaconf import OmegaConf

    target = str(OmegaConf.select(line.points.hydra, "launcher._target_", default=""))
    if target.endswith("BasicLauncher"):
        return "one after another (Hydra's basic launcher)"
    if target.endswith(".VectorizedLauncher"):
        return "summed as if one after another (the vectorised launcher trains a group's jobs at once)"
    return f"summed ({target.rsplit('.', 1)[-1]} may run some at once)"
