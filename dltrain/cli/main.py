"""The `dltrain` command. Named sub-commands (board, runs, ...) go to typer; anything else (overrides such as
`model=cnn`, `-m` sweeps, Hydra's own flags) goes to Hydra's entry point, which owns run directories and
multirun. The first argument decides. Nothing here imports torch before it is needed.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dltrain.core import env
from dltrain.core.exiting import skip_teardown_at_exit
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
from dltrain.sweep.command_line import CommandLine
from dltrain.sweep.jobs import job_function

if TYPE_CHECKING:
    from dltrain.sweep.command_line import SweepPlan

HELP_FLAGS = ("-h", "--help")
COMPLETION_FLAGS = ("--install-completion", "--show-completion")  # typer's; Hydra's own is -sc / --shell-completion


def main() -> None:
    """Ctrl-C and SIGTERM are one line and exit 130/143 from the first instant of start-up (Python's defaults are a
    KeyboardInterrupt traceback and a silent death); the sub-commands keep Python's own handling."""
    import signal

    exit_on_signal()
    skip_teardown_at_exit()  # every command, sweeps and sub-commands (core/exiting.py): `dltrain eval RUN` 2.1 -> 1.7 s
    args = sys.argv[1:]
    completing = env.completing()  # the shell asks typer's completion (dltrain --install-completion)
    try:
        if args[:1] == ["plan"] and not completing and not any(a in HELP_FLAGS for a in args[1:]):
            sys.exit(run_plan(args[1:]))  # its --help is typer's, with the other sub-commands'
        if args[:1] == ["lr-find"] and not completing and not any(a in HELP_FLAGS for a in args[1:]):
            sys.exit(run_lr_find(args[1:]))
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


def resume_into_same_dir(line: CommandLine, args: list[str]) -> list[str]:
    """`trainer.resume=DIR` continues the run in DIR itself (same run folder, same TensorBoard run), with the run's
    own overrides under the command line's (dltrain/resume.py)."""
    from dltrain.run import resume

    given = [override_value(a) for a in args if a.startswith("trainer.resume=")]
    if line.multirun or not given or given[-1] in (None, "") or any(a.startswith("hydra.run.dir=") for a in args):
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
        replayed = resume.replay(args, run_dir, [f"hydra.run.dir={quoted(str(run_dir))}", *keep_record],
                                 line.named_project, line.project)
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
    """Output to a log file, `| tee` or SLURM's output file gets no colour codes (Optuna's log lines are coloured
    unless NO_COLOR is set); a terminal keeps its colours."""
    if not sys.stderr.isatty():
        env.no_color()


def front_door(args: list[str]) -> tuple[CommandLine, str | None]:
    """The command line read once, the project's conf/ on Hydra's search path, a group's glob(...) expanded, a
    sweep composed once, and the first thing it gets wrong (one line, exit 2), before Hydra starts."""
    line = CommandLine.read(args)
    line.rest = with_project(line)
    problem = config_dir_problem(line.config_dir)
    if line.multirun and problem is None:  # a group's glob(...) as its list of choices
        line.rest, problem = expand_globs(line.rest, project_groups(line.project))
    return line, problem or up_front_problem(line)


def run_hydra(args: list[str]) -> None:
    import hydra

    from dltrain.core.conf_dirs import config_dir

    no_colour_off_terminal()
    line, problem = front_door(args)
    if problem:
        exit_with(problem)
    if line.multirun and line.overrides_only:  # jobs named by the swept keys, HParams set up
        line.sweep = plan_sweep(line)
    env.set_project(line.project)  # for the jobs a launcher runs in other processes, and their DDP workers
    args = resume_into_same_dir(line, line.hydra_args())
    sys.argv = [sys.argv[0], *args, *under_torchrun(args)]
    from contextlib import nullcontext

    from dltrain.sweep import ledger
    from dltrain.sweep.plan import start

    sweep = line.sweep
    if line.multirun:
        from dltrain.sweep.validated import register

        register()  # hydra/launcher=vectorized, whatever way dltrain was installed
    with ledger.listening(sweep.root if sweep else None) if line.multirun else nullcontext() as jobs:
        if sweep is not None:
            start(sweep)
        try:  # until a job starts (it installs signals.on_signal_raise_interrupt), a signal ends the process at once
            hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(job_function(line))()
        except KeyboardInterrupt as err:  # before or between jobs (a job reports its own interruption)
            print("dltrain: interrupted", file=sys.stderr)
            sys.exit(128 + signal_number(err))
    ended = ledger.read(jobs) if jobs else []
    if jobs:
        ledger.close(jobs)
    if line.multirun and ended:  # the sweep's table, best marked, and how to open it in TensorBoard
        finish(sweep, ended)
    failed = [job for job in ended if job["status"] == "failed"]
    if failed:  # crashed or rejected: the sweep carried on; the exit code says so (diverged jobs ran to their end)
        listed = "; ".join(f"{job['name']} ({job['error']})" for job in failed)
        print(f"dltrain: {len(failed)} job(s) failed: {listed}", file=sys.stderr)
        sys.exit(1)


def run_plan(args: list[str]) -> int:
    """`dltrain plan [-m] OVERRIDES`: the plan of the run (or sweep) that `dltrain [-m] OVERRIDES` would start, read
    by the same front door (a bad override: the same one line, exit 2); nothing trains, no file is written."""
    no_colour_off_terminal()
    line, problem = front_door(args)
    if problem:
        exit_with(problem)
    if not line.overrides_only:
        flags = " ".join(a for a in line.rest if a.startswith("-"))
        exit_with(f"dltrain plan takes overrides and -m, not Hydra's flags ({flags}); e.g. dltrain plan model=cnn, "
                  "or dltrain plan -m optim.lr=0.01,0.1")
    from dltrain.sweep.preview import show

    return show(line, plan_sweep(line) if line.multirun else None)


def run_lr_find(args: list[str]) -> int:
    """`dltrain lr-find [--num K --min LO --max HI --epochs E] OVERRIDES` (tools/lr_find.py): the run that
    `dltrain OVERRIDES` would start, read by the same front door, trained at K rates as one stack."""
    from dltrain.tools.lr_find import find, read_options

    no_colour_off_terminal()
    probe, rest, problem = read_options(args)
    if problem:
        exit_with(problem)
    line, problem = front_door(rest)
    if problem:
        exit_with(problem)
    if line.multirun or not line.overrides_only:
        flags = " ".join(a for a in line.given if a.startswith("-"))
        exit_with(f"dltrain lr-find takes overrides and its own options (--num, --min, --max, --epochs), not {flags}; "
                  "e.g. dltrain lr-find model=cnn optim=adam")
    return find(line, probe)


def plan_sweep(line: CommandLine) -> SweepPlan:
    """The sweep's plan (sweep/plan.py) from its points; a sweep that cannot be right (an Optuna study pointed away
    from the monitored metric's better side) is one line and exit 2, before any job."""
    from dltrain.core.registry import ConfigError
    from dltrain.sweep import plan as sweeps

    try:
        return sweeps.plan(line.rest, line.points, line.project)
    except ConfigError as err:
        exit_with(str(err))


def up_front_problem(line: CommandLine) -> str | None:
    """What the command line gets wrong, found before Hydra starts (one line, exit 2)."""
    others = line.rest
    if not line.overrides_only:  # --cfg, --info, ...: Hydra reports their other problems itself
        return two_modes([*line.flags, *others])
    return (stray_word(others) or unreadable(others) or no_cluster(others)
            or (sweep_problem(line) if line.multirun else first_problem(others, False))
            or unwritable_output(others, line.multirun))


def sweep_problem(line: CommandLine) -> str | None:
    """Compose the sweep's points, once (kept in `line` for its plan): the first that does not compose is the problem,
    and so is anything Hydra cannot even expand (range(0,1,0))."""
    from dltrain.core.registry import first_line
    from dltrain.run.points import compose_points

    try:
        line.points = compose_points(line.rest)
    except Exception as err:  # noqa: BLE001  (Hydra's own errors while expanding a sweep)
        return f"cannot expand the overrides: {type(err).__name__}: {first_line(err, 160)}"
    return line.points.problem


def project_groups(project: Path | None) -> dict[str, list[str]]:
    """The config groups and their choices: dltrain's and the project's."""
    from dltrain.core.conf_dirs import groups
    from dltrain.run.plugins import project_conf

    return groups(project_conf(project))


def with_project(line: CommandLine) -> list[str]:
    """A user's project (the working directory's conf/, or one named with --config-dir or hydra.searchpath): its
    conf/ joins the search path beside dltrain's own groups (--config-dir becomes a search path entry, so the
    up-front checks see it)."""
    rest = line.rest
    if any(a.startswith("hydra.searchpath=") for a in rest) or not (line.conf and line.conf.is_dir()):
        return rest
    # beside the user's own overrides: Hydra's argparse takes the overrides as one run of positional arguments
    at = max((i + 1 for i, a in enumerate(rest) if "=" in a and not a.startswith("-")), default=len(rest))
    return [*rest[:at], f"hydra.searchpath=[{quoted(f'file://{line.conf}')}]", *rest[at:]]


def finish(sweep: SweepPlan | None, records: list[dict[str, Any]]) -> None:
    """After the last job: the runs table of the sweep (best marked), the seed summary when it ran seeds, and the
    command that opens it."""
    roots = {r.get("root") for r in records if r.get("root")}
    root = sweep.root if sweep is not None and sweep.root is not None else (Path(roots.pop()) if len(roots) == 1 else None)
    if root is None or not root.is_dir():
        return
    from dltrain.core.metrics_file import ENDED_OK
    from dltrain.sweep.runs_table import runs_table, terminal_width
    from dltrain.sweep.seeds_table import seeds_table

    ended = sum(r["status"] in ENDED_OK for r in records)
    print(f"\nsweep done: {len(records)} job(s), {ended} ran to their end, {len(records) - ended} failed", flush=True)
    lines = runs_table(root, terminal_width()) + seeds_table(root, terminal_width())
    print("\n".join(lines))
    print(f"open it: dltrain board {root}", flush=True)
