"""Training a group of sweep points as one stack (the vectorised launcher's trainer, issue 21).

`train_stack(members, on_end)` trains the members of one group (configs that run/stacking.py lets share a stack)
and leaves in each member's folder what an ordinary run leaves there. `why_alone(config)` says why a point
cannot join a stack (it then runs alone through the ordinary engine).

PLACEHOLDER (being replaced in this session): `train_stack` still trains the members one after another with the
ordinary engine, so that the launcher can be built and tested against this interface.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dltrain.run.config import RunConfig


@dataclass
class Member:
    """One sweep point of a stack: its checked config, its job folder and its overrides as given."""

    config: RunConfig
    run_dir: Path
    overrides: list[str]


def why_alone(config: RunConfig) -> str | None:
    """Why this point cannot be trained in a stack (one short clause), or None when it can."""
    if config.trainer.devices > 1:
        return "trainer.devices > 1 (DDP) trains alone"
    return None


def train_stack(members: list[Member], on_end: Callable[[int, dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Train `members` together; each member's folder gets config.yaml, metrics.json (with `launcher:
    vectorized`), its event file and checkpoints, as an ordinary run's. `on_end(i, report)` is called as member i
    ends (members may end at different epochs); returns every member's report (metrics.json's content).
    A member that fails raises nothing here: its report has status "failed" and an "error" line."""
    from dltrain.run.train import run_job

    reports = []
    for i, member in enumerate(members):
        report = run_job(member.config, member.run_dir, member.overrides)
        reports.append(report)
        on_end(i, report)
    return reports
