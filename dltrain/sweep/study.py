"""A sweeper that optimises the value each job returns (Optuna: `hydra/sweeper=optuna`): the study's direction.

Each job returns its monitored metric's best value (dltrain/jobs.py). Optuna minimises unless told otherwise, so a
study over `early_stopping.monitor=val/acc` would search for the least accurate runs. The study's direction follows
early_stopping.mode as the run resolves it (auto: the task's direction for the monitored metric); a
`hydra.sweeper.direction` on the command line that contradicts it is refused in one line. Several objectives (a
list of directions) are the user's to set. No torch import: the sweep's parent stays light.
"""
from __future__ import annotations

from typing import Any

from dltrain.core.registry import ConfigError
from dltrain.sweep.hparams import Monitored

WANTED = {"min": "minimize", "max": "maximize"}


def direction_name(value: Any) -> str | None:
    """Optuna's direction as composed (its Direction enum by default, a string from an override); None for a list."""
    if isinstance(value, str):
        return value.lower()
    name = getattr(value, "name", None)
    return name.lower() if isinstance(name, str) else None


def study_direction(args: list[str], hydra_cfg: Any, watched: Monitored) -> list[str]:
    """The override that points the sweeper's study the monitored metric's way (none when it already does, or the
    sweeper takes no direction); raises ConfigError when the command line asks for the other way."""
    sweeper = hydra_cfg.get("sweeper") or {}
    if "direction" not in sweeper or watched.mode not in WANTED:
        return []
    composed, wanted = direction_name(sweeper.get("direction")), WANTED[watched.mode]
    if composed is None or composed == wanted:
        return []
    given = [a.split("=", 1)[1] for a in args if a.startswith("hydra.sweeper.direction=")]
    if given:
        better = "higher" if watched.mode == "max" else "lower"
        raise ConfigError(f"hydra.sweeper.direction={given[-1]} searches for the worst runs: a {better} "
                          f"{watched.monitor} is better (early_stopping.mode={watched.mode}, the value each job "
                          f"returns); use hydra.sweeper.direction={wanted}, or leave it out")
    return [f"hydra.sweeper.direction={wanted}"]
