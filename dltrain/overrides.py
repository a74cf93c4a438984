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

    from dltrain.registry import first_line

    for arg in args:
        try:
            value = override_value(arg)
        except Exception as err:  # noqa: BLE001  (Hydra's lexer, parser and int() conversion errors)
            return (f"cannot read the override {arg[:80]}{'...' if len(arg) > 80 else ''}: {first_line(err, 160)}; "
                    "quote a value with special characters, e.g. key=\"it's here\"")
        if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) and isinstance(value, str):
            limit = os.pathconf(".", "PC_NAME_MAX")
            long = next((part for part in Path(value).parts if len(part.encode()) > limit), None)
            if long:
                return f"{arg.split('=')[0]}: the folder name {long[:40]}... is longer than {limit} bytes; choose a shorter one"
    return None


def first_problem(args: list[str], multirun: bool) -> str | None:
    """The up-front composition check; anything it cannot even evaluate (range(0,1,0)) is one line too."""
    from dltrain.registry import first_line

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

    from dltrain.registry import first_line

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        return first_line(err)
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

    from dltrain.conf_dirs import config_dir
    from dltrain.registry import first_line

    overrides = [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/")) or
                 a.startswith("hydra.searchpath=")]  # the search path decides which choices exist
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            compose("config", overrides=overrides)
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
    return None
