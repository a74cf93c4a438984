"""Checking a command line's overrides before anything runs: each must parse (Hydra's grammar), a run folder's
name must fit the file system, and the composition (every choice and key, every swept value) must succeed, so
that a problem is one line and exit code 2. Quoting helpers for values Hydra's grammar would misread."""
from __future__ import annotations

from pathlib import Path

from dltrain.run.points import check_overrides, check_sweep, interpolation_line  # noqa: F401  (callers import them here)

SUBCOMMANDS = ("init", "board", "runs", "diff", "eval", "export", "generate", "predict", "plan", "lr-find")


def quoted(value: str, mark: str = '"') -> str:
    """A value as a Hydra quoted string, in `mark` quotes (" or '): any path (apostrophes, spaces, unicode, backslashes)
    survives the override grammar, whose only escapes are backslashes before the quote or at the end."""
    import re

    escaped = re.sub(rf"(\\*){mark}", lambda m: m.group(1) * 2 + "\\" + mark, value)
    return mark + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + mark


MODE_FLAGS = {"--run": "-r", "--multirun": "-m", "--cfg": "-c", "--info": "-i", "--shell-completion": "-sc"}


def two_modes(args: list[str]) -> str | None:
    """Hydra runs one of its modes (run, multirun, print the config, info, shell completion); two of them is a
    ValueError traceback from Hydra, so it is caught here."""
    given = [long for long, short in MODE_FLAGS.items()
             if any(a in (long, short) or a.startswith((f"{long}=", f"{short}=")) for a in args)]
    if len(given) < 2:
        return None
    hint = (" `dltrain --cfg job OVERRIDES` without -m prints one job's config (one value per swept key)"
            if "--multirun" in given and "--cfg" in given else "")
    return f"{' and '.join(MODE_FLAGS[g] if g == '--multirun' else g for g in given)} cannot be used together: " \
           f"Hydra runs one of --run, -m, --cfg, --info, --shell-completion;{hint or ' give one of them'}"


def override_value(arg: str) -> object:
    """What Hydra's grammar makes of KEY=VALUE (quotes removed, null as None)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(arg).value()


def unreadable(args: list[str]) -> str | None:
    """Each override must parse (Hydra's own report of a grammar error is a traceback), and a run folder's name
    must fit the file system, before anything runs."""
    import os

    from dltrain.core.registry import first_line

    for arg in args:
        try:
            value = override_value(arg)
        except Exception as err:  # noqa: BLE001  (Hydra's lexer, parser and int() conversion errors)
            return (f"cannot read the override {arg[:80]}{'...' if len(arg) > 80 else ''}: {first_line(err, 160)}; "
                    "quote a value with special characters, e.g. key=\"it's here\"")
        if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) and (value is None or str(value).strip() == ""):
            return (f"{arg.split('=')[0]} is empty: the run's files would be scattered in the working folder; give a "
                    f"folder, e.g. {arg.split('=')[0]}=runs/{'sweep' if 'sweep' in arg else 'run'}1")
        if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) and isinstance(value, str):
            limit = os.pathconf(".", "PC_NAME_MAX")
            long = next((part for part in Path(value).parts if len(part.encode()) > limit), None)
            if long:
                return f"{arg.split('=')[0]}: the folder name {long[:40]}... is longer than {limit} bytes; choose a shorter one"
    return None


def first_problem(args: list[str], multirun: bool) -> str | None:
    """The up-front composition check; anything it cannot even evaluate (range(0,1,0)) is one line too."""
    from dltrain.core.registry import first_line

    try:
        return check_sweep(args) if multirun else check_overrides(args)
    except Exception as err:  # noqa: BLE001  (Hydra's own errors while expanding a sweep)
        return f"cannot expand the overrides: {type(err).__name__}: {first_line(err, 160)}"


def no_cluster(args: list[str]) -> str | None:
    """A SLURM launcher chosen on a machine without SLURM: submitit's own error is a traceback."""
    import shutil

    chosen = [a.split("=", 1)[1] for a in args if a.startswith("hydra/launcher=")]
    if chosen and chosen[-1] in ("slurm", "submitit_slurm") and not shutil.which("sbatch"):
        return (f"hydra/launcher={chosen[-1]} submits jobs to a SLURM cluster, and this machine has no sbatch: run it "
                "on the cluster, or try the sweep here with hydra/launcher=submitit_local")
    return None


def stray_word(args: list[str]) -> str | None:
    """A bare word that is no override (a mistyped sub-command, say)."""
    word = next((a for a in args if "=" not in a and not a.startswith("~")), None)
    if word is None:
        return None
    return f"'{word}' is neither a sub-command ({', '.join(SUBCOMMANDS)}) nor an override KEY=VALUE; see dltrain --help"


def expand_globs(args: list[str], choices: dict[str, list[str]]) -> tuple[list[str], str | None]:
    """`group=glob(...)` as the list of the group's choices it matches (Hydra's own expansion needs its config
    loader, which the up-front checks do not have), and a problem if one matches none; a glob on another key is
    left for given_twice to refuse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    out = []
    for arg in args:
        try:
            override = OverridesParser.create().parse_override(arg)
        except Exception:  # noqa: BLE001  (unreadable() reports it)
            override = None
        group = override.key_or_group if override is not None else None
        if override is None or not isinstance(override.value(), Glob) or group not in choices:
            out.append(arg)
            continue
        matched = override.value().filter(choices[group])
        if not matched:
            return args, f"{arg} matches none of {group}'s choices: {', '.join(choices[group])}"
        out.append(f"{group}={','.join(matched)}")
    return out, None


def config_dir_problem(config_dir: tuple[str, str] | None) -> str | None:
    """--config-dir/-cd (the flag as typed, its value) must name a folder: a missing one, a file or '' would train
    dltrain's defaults silently."""
    from dltrain.core.files import looked_in

    if config_dir is None:
        return None
    flag, value = config_dir
    if not value.strip():
        return f"{flag} is empty; give your project's conf/ folder, e.g. --config-dir myproject/conf"
    if not Path(value).expanduser().is_dir():
        what = "a file, not a folder" if Path(value).expanduser().exists() else f"not there{looked_in(value)}"
        return (f"--config-dir {value} is {what}; give your project's conf/ folder (the one with model/, data/, "
                "... in it)")
    return None


def unwritable_output(args: list[str], multirun: bool) -> str | None:
    """The folder a run (or sweep) writes in must be one it can make and write: Hydra's own failure to make it (a
    read-only mount, a folder the user may not write, a file in the way) is a traceback."""
    import os
    import tempfile

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [override_value(a) for a in args if a.startswith(f"{key}=")]
    folder = Path(str(given[-1])).expanduser() if given else Path("multirun" if multirun else "outputs")
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # "." or "/" at the latest
    named = f"{key}={given[-1]}" if given else f"the default {key} ({folder}/...)"
    if not existing.is_dir():
        return f"{named}: {existing} is a file, not a folder; give {key}=A_FOLDER"
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".dltrain-probe-"))
    except OSError as err:
        return (f"{named}: cannot write in {existing.absolute()} ({err.strerror}); make it writable, or give a folder "
                f"you can write, e.g. {key}=~/dltrain-runs/{'sweep' if multirun else 'run'}1")
    return None
