"""Checking a command line's overrides before anything runs: each must parse (Hydra's grammar), a run folder's
name must fit the file system, and the composition (every choice and key, every swept value) must succeed, so
that a problem is one line and exit code 2. Quoting helpers for values Hydra's grammar would misread."""
from __future__ import annotations

from pathlib import Path

SUBCOMMANDS = ("init", "board", "runs", "eval", "export", "generate", "predict")


def quoted(value: str) -> str:
    """A value as a Hydra quoted string: any path (apostrophes, spaces, unicode) survives the override grammar,
    whose only escapes are backslashes before a quote or at the end."""
    import re

    escaped = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', value)
    return '"' + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + '"'


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


def check_sweep(args: list[str]) -> str | None:
    """Compose every value of every swept key once (the other keys at their first value): an unknown choice
    or key in a sweep is one line too. Bad values still fail their own job only. Intervals (Optuna) are
    not listed, so they are left to the sweeper. A value listed twice is refused: jobs are named by their
    values, so two jobs would share one folder."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from dltrain.core.registry import first_line

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        return first_line(err)
    problem = given_twice(parsed) or interval_without_sweeper(args, parsed)
    if problem:
        return problem
    choices = []
    for override in parsed:
        key = override.input_line.split("=", 1)[0]
        if not override.is_sweep_override():
            choices.append([override.input_line])
        elif override.is_discrete_sweep():
            values = list(override.sweep_string_iterator())
            twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if twice is not None:
                return f"{override.key_or_group} lists {twice} twice; each value names one job, run once"
            if not values:
                return (f"{override.input_line} gives no values, so the sweep would run nothing: range(start, stop, "
                        "step) counts from start up to stop (excluded), e.g. range(0,5) or range(5,0,-1)")
            choices.append([f"{key}={value}" for value in values])
    for i, values in enumerate(choices):
        for value in values[1:] if i else values:  # the first point checks every key's first value
            problem = check_overrides([v[0] for v in choices[:i]] + [value] + [v[0] for v in choices[i + 1:]])
            if problem:
                return problem
    return None


def check_overrides(args: list[str]) -> str | None:
    """Compose once up front so an unknown choice or key is one line (Hydra's own report spans many)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf import DictConfig, OmegaConf

    from dltrain.core.registry import first_line
    from dltrain.run.conf_dirs import config_dir

    overrides = [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/")) or
                 a.startswith("hydra.searchpath=")]  # the search path decides which choices exist
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            return interpolation_problem(compose("config", overrides=overrides))
        except MissingConfigException as err:
            group, _, choice = (err.missing_cfg_file or "").rpartition("/")
            return f"unknown {group} '{choice}'; valid: {', '.join(err.options or [])}"
        except ConfigCompositionException as err:
            bad = next((o for o in overrides if f"'{o.split('=')[0]}'" in str(err)), None)
            if bad is None:
                return first_line(err)
            key = bad.split("=")[0]
            parent, _, leaf = key.rpartition(".")
            node = compose("config", overrides=[o for o in overrides if o != bad])
            found = OmegaConf.select(node, parent) if parent else node
            if not isinstance(found, DictConfig):
                return first_line(err)
            if leaf in found or len(found) == 0:  # a free-form mapping such as model.init_args: Hydra's "use +key"
                return " ".join(str(err).split())
            where = f"{parent}={found.name}" if "name" in found else (parent or "the config")
            return f"{key} is not an option of {where}; valid: {', '.join(str(k) for k in found if k != 'name')}"
        except HydraException as err:
            return first_line(err)


def interpolation_problem(cfg: object) -> str | None:
    """Every `${...}` must resolve: a missing key, one that refers to itself or an unknown resolver is one line
    naming the setting (OmegaConf's own report is a traceback from wherever the value is first read)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        if "HydraConfig was not set" in str(err):  # ${hydra:...} resolves only inside the job
            return None
        return interpolation_line(err)
    return None


def interpolation_line(err: Exception) -> str:
    from dltrain.core.registry import first_line

    key = getattr(err, "full_key", None) or "a setting"
    return (f"{key}: its ${{...}} interpolation cannot be resolved ({first_line(err, 160)}); it must name another "
            "existing setting (not itself), or a resolver OmegaConf knows (e.g. ${oc.env:NAME,default})")


def given_twice(parsed: list) -> str | None:
    """A key given twice with different values: Hydra would keep the last and drop the other without a word. A glob
    left here is on a value key (run_hydra expands a group's into its choices)."""
    from hydra.core.override_parser.types import Glob

    seen: dict[str, str] = {}
    for override in parsed:
        key, line = override.key_or_group, override.input_line
        if isinstance(override.value(), Glob):
            return (f"{line}: glob() picks among a config group's choices (e.g. optim=glob(*) or "
                    f"optim=glob(*,exclude=sgd)); a value key takes a list, e.g. {key}=0.1,0.01")
        if key in seen and seen[key] != line:
            return (f"{key} is given twice ({seen[key]} and {line}): Hydra would keep only the last; give it once, "
                    f"with every value, e.g. {key}={','.join(v.split('=', 1)[1] for v in (seen[key], line))}")
        seen[key] = line
    return None


def interval_without_sweeper(args: list[str], parsed: list) -> str | None:
    """interval(a,b) needs a sweeper that picks values from it (Optuna); Hydra's basic sweeper only lists values."""
    interval = next((o for o in parsed if o.is_sweep_override() and o.is_interval_sweep()), None)
    if interval is None or sweeper_of([o.input_line for o in parsed if not o.is_sweep_override()]) != "BasicSweeper":
        return None
    return (f"{interval.input_line}: an interval is searched by a sweeper that picks values from it; add "
            f"hydra/sweeper=optuna (its trials: hydra.sweeper.n_trials=N), or list values for the basic sweeper, "
            f"e.g. {interval.key_or_group}=0.1,0.5 or range(...)")


def sweeper_of(args: list[str]) -> str:
    """The class name of the sweeper these (single-valued) overrides choose, an experiment's choice included; '' if
    it cannot be known here."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dltrain.run.conf_dirs import config_dir

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=args, return_hydra_config=True)
        return str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")).rsplit(".", 1)[-1]
    except Exception:  # noqa: BLE001  (a sweeper plugin that is not installed: Hydra says so itself)
        return ""


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


def config_dir_problem(args: list[str]) -> str | None:
    """--config-dir/-cd must name a folder: a missing one, a file or '' would train dltrain's defaults silently."""
    from dltrain.core.files import looked_in

    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd"):
            value = args[i + 1] if i + 1 < len(args) else ""
        elif arg.startswith(("--config-dir=", "-cd=")):
            value = arg.split("=", 1)[1]
        else:
            continue
        if not value.strip():
            return f"{arg.split('=')[0]} is empty; give your project's conf/ folder, e.g. --config-dir myproject/conf"
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
