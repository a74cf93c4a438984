"""Composing a command line's overrides before anything runs, once: a single run's config, or a sweep's points
(each value of each swept key once, the other keys at their first value). What does not compose is one line for
the user (exit 2); what composes is what the sweep's plan and its HParams columns are made from (sweep/plan.py),
so a sweep's configs are composed once in its parent. Bad values (not choices or keys) still fail their own job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Points:
    """A sweep composed: its first problem, or Hydra's config for the sweep, every override in force (the command
    line's, over an experiment's `hydra.sweeper.params`), and the task config of each point: (swept key or '',
    plain config or None where it resolves only in a job), the first point first."""

    problem: str | None = None
    hydra: Any = None  # Hydra's own config node (None: it does not compose here; Hydra reports it)
    overrides: dict[str, Any] = field(default_factory=dict)  # key -> Hydra's parsed override
    points: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)


def task_only(args: list[str]) -> list[str]:
    """The overrides a task config composes from: no hydra.* key but the search path (which decides the choices)."""
    return [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/")) or a.startswith("hydra.searchpath=")]


def check_overrides(args: list[str]) -> str | None:
    """Compose once up front so an unknown choice or key is one line (Hydra's own report spans many)."""
    from hydra import initialize_config_dir

    from dltrain.core.conf_dirs import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose_checked(task_only(args))[1]


def compose_checked(overrides: list[str]) -> tuple[Any, str | None]:
    """The composed config, or the one line that says why it does not compose (inside initialize_config_dir)."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException

    from dltrain.core.registry import first_line

    try:
        cfg = compose("config", overrides=overrides)
    except MissingConfigException as err:
        group, _, choice = (err.missing_cfg_file or "").rpartition("/")
        return None, f"unknown {group} '{choice}'; valid: {', '.join(err.options or [])}"
    except ConfigCompositionException as err:
        return None, composition_problem(err, overrides)
    except HydraException as err:
        return None, first_line(err)
    return cfg, interpolation_problem(cfg)


def composition_problem(err: Exception, overrides: list[str]) -> str:
    """A key that is no option: named with the options of the node it was meant for."""
    from hydra import compose
    from omegaconf import DictConfig, OmegaConf

    from dltrain.core.registry import first_line

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


def check_sweep(args: list[str]) -> str | None:
    """A sweep's first problem (see compose_points)."""
    return compose_points(args).problem


def compose_points(args: list[str]) -> Points:
    """Compose every value of every swept key once (the other keys at their first value): an unknown choice or key
    in a sweep is one line. Intervals (Optuna) are not listed, so they are left to the sweeper. A value listed
    twice is refused: jobs are named by their values, so two jobs would share one folder."""
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from dltrain.core.conf_dirs import config_dir
    from dltrain.core.registry import first_line

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(args)
    except HydraException as err:
        return Points(first_line(err))
    given = {o.key_or_group: o for o in parsed}
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        hydra, sweeper = hydra_config(given)
        problem = given_twice(parsed) or interval_without_sweeper(parsed, sweeper) or no_values(parsed)
        if problem:
            return Points(problem)
        overrides = dict(given)
        params = sweeper_params(hydra)
        if params:  # an experiment's own sweep; the command line wins where both name a key
            overrides = {**{o.key_or_group: o for o in parser.parse_overrides(params)}, **given}
            hydra = hydra_config(overrides)[0]
        return composed(overrides, given, hydra)


def first_value(override: Any) -> str | None:
    """The override at its first value; None for an interval (the config's own value stands in)."""
    if not override.is_sweep_override():
        return override.input_line
    if override.is_discrete_sweep():
        return f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"
    return None


def is_hydra_key(key: str) -> bool:
    return key.startswith(("hydra.", "hydra/")) or key == "hydra"


def first_lines(overrides: dict[str, Any], hydra: bool) -> list[str]:
    return [line for k, o in overrides.items() if (line := first_value(o)) is not None
            and (hydra or not is_hydra_key(k) or k == "hydra.searchpath")]


def hydra_config(overrides: dict[str, Any]) -> tuple[Any, str]:
    """Hydra's config at the first point, and its sweeper's class name ('' where Hydra's own keys do not compose
    here: a launcher or sweeper plugin that is not installed; Hydra reports it itself)."""
    from hydra import compose
    from omegaconf import OmegaConf

    for hydra_keys in (True, False):
        try:
            cfg = compose("config", overrides=first_lines(overrides, hydra_keys), return_hydra_config=True)
        except Exception:  # noqa: BLE001  (without Hydra's keys; else nothing composes: its points say why)
            continue
        sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")).rsplit(".", 1)[-1]
        return cfg.hydra, sweeper if hydra_keys else ""
    return None, ""


def sweeper_params(hydra: Any) -> list[str]:
    """An experiment's `hydra.sweeper.params` as overrides."""
    from omegaconf import OmegaConf

    if hydra is None:
        return []
    params = OmegaConf.to_container(hydra.sweeper, resolve=False).get("params") or {}
    return [f"{k}={v}" for k, v in params.items()]


def composed(overrides: dict[str, Any], given: dict[str, Any], hydra: Any) -> Points:
    """Each point's task config; a point of a key the command line gives that does not compose is the problem, one
    of an experiment's own params is left out (its job fails)."""
    task_lines = first_lines(overrides, False)
    found = Points(None, hydra, overrides)
    todo = [("", task_lines)]
    for key, override in overrides.items():
        if is_hydra_key(key) or not override.is_sweep_override() or not override.is_discrete_sweep():
            continue
        at = task_lines.index(first_value(override))
        todo += [(key, [*task_lines[:at], f"{override.get_key_element()}={value}", *task_lines[at + 1:]])
                 for value in list(override.sweep_string_iterator())[1:]]
    for key, point in todo:
        cfg, problem = compose_checked(task_only(point))
        if problem and (key in given or not key):
            return Points(problem)
        if cfg is not None:
            found.points.append((key, plain_task(cfg)))
    return found


def plain_task(cfg: Any) -> dict[str, Any] | None:
    from omegaconf import OmegaConf

    try:  # without Hydra's own node: its ${hydra:...} values resolve only inside a job
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    except Exception:  # noqa: BLE001
        return None


def no_values(parsed: list) -> str | None:
    """A swept key that lists a value twice, or none."""
    for override in parsed:
        if not override.is_sweep_override() or not override.is_discrete_sweep():
            continue
        values = list(override.sweep_string_iterator())
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            return f"{override.key_or_group} lists {twice} twice; each value names one job, run once"
        if not values:
            return (f"{override.input_line} gives no values, so the sweep would run nothing: range(start, stop, "
                    "step) counts from start up to stop (excluded), e.g. range(0,5) or range(5,0,-1)")
    return None


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


def interval_without_sweeper(parsed: list, sweeper: str) -> str | None:
    """interval(a,b) needs a sweeper that picks values from it (Optuna); Hydra's basic sweeper only lists values."""
    interval = next((o for o in parsed if o.is_sweep_override() and o.is_interval_sweep()), None)
    if interval is None or sweeper != "BasicSweeper":
        return None
    return (f"{interval.input_line}: an interval is searched by a sweeper that picks values from it; add "
            f"hydra/sweeper=optuna (its trials: hydra.sweeper.n_trials=N), or list values for the basic sweeper, "
            f"e.g. {interval.key_or_group}=0.1,0.5 or range(...)")
