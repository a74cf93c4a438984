"""The `dltrain` command. Named sub-commands (board, runs, ...) go to typer; anything else (overrides such as
`model=cnn`, `-m` sweeps, Hydra's own flags) goes to Hydra's entry point, which owns run directories and
multirun. The first argument decides. Nothing here imports torch before it is needed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from dltrain.run.overrides import (
    SUBCOMMANDS,
    config_dir_problem,
    expand_globs,
    first_problem,
    no_cluster,
    override_value,
    quoted,
    stray_word,
    two_modes,
    unreadable,
    unwritable_output,
)
from dltrain.run.signals import exit_on_signal, signal_number
from dltrain.sweep.jobs import hydra_job

if TYPE_CHECKING:
    from dltrain.sweep.plan import SweepPlan

HELP_FLAGS = ("-h", "--help")
COMPLETION_FLAGS = ("--install-completion", "--show-completion")  # typer's; Hydra's own is -sc / --shell-completion


def main() -> None:
    """Ctrl-C and SIGTERM are one line and exit 130/143 from the first instant of start-up (Python's defaults are a
    KeyboardInterrupt traceback and a silent death); the sub-commands keep Python's own handling."""
    import signal

    exit_on_signal()
    args = sys.argv[1:]
    completing = "_DLTRAIN_COMPLETE" in os.environ  # the shell asks typer's completion (dltrain --install-completion)
    try:
        if completing or (args and (args[0] in SUBCOMMANDS or args[0] in HELP_FLAGS or args[0] in COMPLETION_FLAGS)):
            from dltrain.cli.commands import app

            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            app(prog_name="dltrain")
        else:
            run_hydra(args)
    except KeyboardInterrupt as err:  # after the jobs (a job reports its own interruption)
        print("dltrain: interrupted", file=sys.stderr)
        sys.exit(128 + signal_number(err))


def resume_into_same_dir(args: list[str], named_project: bool = False) -> list[str]:
    """`trainer.resume=DIR` continues the run in DIR itself (same run folder, same TensorBoard run), with the run's
    own overrides under the command line's (dltrain/resume.py); `named_project`: --config-dir or hydra.searchpath
    was given."""
    from dltrain.run import resume

    multirun = any(a in ("-m", "--multirun") for a in args)
    given = [override_value(a) for a in args if a.startswith("trainer.resume=")]
    if multirun or not given or given[-1] in (None, "") or any(a.startswith("hydra.run.dir=") for a in args):
        return args
    target = Path(str(given[-1])).expanduser()
    if not (target / "last.pt").is_file() and not target.is_file():
        from dltrain.core.files import looked_in

        exit_with(f"no checkpoint at {target}{looked_in(target)}; give a run folder that holds last.pt, or a .pt file")
    run_dir = target if target.is_dir() else target.parent
    keep_record = [] if any(a.startswith("hydra.output_subdir=") for a in args) else ["hydra.output_subdir=null"]
    # .hydra/ keeps the first launch's record (a refused resume changes nothing); resume.yaml and config.yaml the latest
    from dltrain.core.registry import ConfigError

    try:
        replayed = resume.replay(args, run_dir, [f"hydra.run.dir={quoted(str(run_dir))}", *keep_record], named_project)
    except ConfigError as err:
        exit_with(str(err))
    merged = [a for a in replayed if resume.is_task_override(a) or a.startswith("hydra.searchpath=")]
    problem = None if merged == [a for a in args if a in merged] else first_problem(merged, False)
    if problem:  # the run's recorded overrides no longer compose (an experiment or choice since removed)
        exit_with(f"{problem} (composing the run's own overrides: {' '.join(merged)})")
    return replayed


def exit_with(problem: str) -> NoReturn:
    print(f"dltrain: error: {problem}", file=sys.stderr)
    sys.exit(2)  # before Hydra makes a run directory


def under_torchrun(args: list[str]) -> list[str]:
    """Under an external launcher (torchrun, or SLURM's tasks) every rank runs Hydra: give them one shared run
    directory, named by the launch's id, and let only rank 0 write Hydra's files (dltrain/cluster.py)."""
    from dltrain.run.cluster import shared_run_args

    return shared_run_args(args)


def no_colour_off_terminal() -> None:
    """Output to a log file, `| tee` or SLURM's output file gets no colour codes: colorlog, which formats Optuna's
    log lines, colours whatever the stream unless NO_COLOR is set (no-color.org); a terminal keeps its colours."""
    if not sys.stderr.isatty():
        os.environ.setdefault("NO_COLOR", "1")


def run_hydra(args: list[str]) -> None:
    import hydra

    from dltrain.run.conf_dirs import config_dir

    no_colour_off_terminal()

    multirun = any(a in ("-m", "--multirun") for a in args)
    named_project = any(a.split("=")[0] in ("--config-dir", "-cd") or a.startswith("hydra.searchpath=") for a in args)
    problem = config_dir_problem(args)
    args = [a for a in args if a in ("-m", "--multirun")] + with_project([a for a in args if a not in ("-m", "--multirun")])
    others = [a for a in args if a not in ("-m", "--multirun")]  # -m goes first: Hydra reads it nowhere else
    if multirun and problem is None:  # a group's glob(...) as its list of choices
        others, problem = expand_globs(others, project_groups())
        args = [a for a in args if a in ("-m", "--multirun")] + others
    problem = problem or up_front_problem(args, others, multirun)
    if problem:
        exit_with(problem)
    args = resume_into_same_dir(args, named_project)
    sweep = None
    if multirun and not any(a.startswith("-") for a in others):  # jobs named by the swept keys, HParams set up
        sweep = plan_sweep(others)
        args = [*args, *sweep.hydra_args]
    sys.argv = [sys.argv[0], *args, *under_torchrun(args)]
    from contextlib import nullcontext

    from dltrain.sweep import ledger
    from dltrain.sweep.plan import finish, start

    with ledger.listening(sweep.root if sweep else None) if multirun else nullcontext() as jobs:
        if sweep is not None:
            start(sweep)
        try:  # until a job starts (it installs signals.on_signal_raise_interrupt), a signal ends the process at once
            hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(hydra_job)()
        except KeyboardInterrupt as err:  # before or between jobs (a job reports its own interruption)
            print("dltrain: interrupted", file=sys.stderr)
            sys.exit(128 + signal_number(err))
    ended = ledger.read(jobs) if jobs else []
    if jobs:
        ledger.close(jobs)
    if multirun and ended:  # the sweep's table, best marked, and how to open it in TensorBoard
        finish(sweep, ended)
    failed = [job for job in ended if job["status"] == "failed"]
    if failed:  # crashed or rejected: the sweep carried on; the exit code says so (diverged jobs ran to their end)
        listed = "; ".join(f"{job['name']} ({job['error']})" for job in failed)
        print(f"dltrain: {len(failed)} job(s) failed: {listed}", file=sys.stderr)
        sys.exit(1)


def plan_sweep(overrides: list[str]) -> SweepPlan:
    """The sweep's plan (dltrain/sweep.py); a sweep that cannot be right (an Optuna study pointed away from the
    monitored metric's better side) is one line and exit 2, before any job."""
    from dltrain.core.registry import ConfigError
    from dltrain.sweep import plan as sweeps

    try:
        return sweeps.plan(overrides)
    except ConfigError as err:
        print(f"dltrain: error: {err}", file=sys.stderr)
        sys.exit(2)


def up_front_problem(args: list[str], others: list[str], multirun: bool) -> str | None:
    """What the command line gets wrong, found before Hydra starts (one line, exit 2)."""
    if any(a.startswith("-") for a in others):  # --cfg, --info, ...: Hydra reports their other problems itself
        return two_modes(args)
    return (stray_word(others) or unreadable(others) or no_cluster(others) or first_problem(others, multirun)
            or unwritable_output(others, multirun))


def project_groups() -> dict[str, list[str]]:
    """The config groups and their choices: dltrain's and the project's (found by with_project)."""
    from dltrain.run.conf_dirs import groups
    from dltrain.run.plugins import PROJECT_ENV, project_conf

    root = os.environ.get(PROJECT_ENV)
    return groups(project_conf(Path(root)) if root else None)


def with_project(args: list[str]) -> list[str]:
    """A user's project (the working directory's conf/, or one named with --config-dir or hydra.searchpath):
    its conf/ joins the search path beside dltrain's own groups, and jobs learn its folder (for its plugins)."""
    import os

    from dltrain.run.plugins import PROJECT_ENV, project_root

    root = project_root(args)
    os.environ[PROJECT_ENV] = str(root) if root else ""
    rest, conf = [], None
    for i, arg in enumerate(args):  # --config-dir DIR becomes a search path entry, so the up-front checks see it
        if arg in ("--config-dir", "-cd") or (i and args[i - 1] in ("--config-dir", "-cd")):
            conf = conf or arg if i and args[i - 1] in ("--config-dir", "-cd") else conf
        elif arg.startswith(("--config-dir=", "-cd=")):
            conf = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if any(a.startswith("hydra.searchpath=") for a in rest):
        return rest
    conf_dir = Path(conf).expanduser().resolve() if conf else (root / "conf" if root else None)
    if not (conf_dir and conf_dir.is_dir()):
        return rest
    # beside the user's own overrides: Hydra's argparse takes the overrides as one run of positional arguments
    at = max((i + 1 for i, a in enumerate(rest) if "=" in a and not a.startswith("-")), default=len(rest))
    return [*rest[:at], f"hydra.searchpath=[{quoted(f'file://{conf_dir}')}]", *rest[at:]]
