"""Which configs could train side by side as one stack (the vectorised launcher's rule, issue 21): members of a stack
share one data set on the device, one architecture and one step function, so they may differ only in keys that a
stacked step can hold per member, and must agree on everything else.

Per member (may differ): the optimizer's numeric options (optim.lr, betas, ...; not its name), the schedule
(sched), the penalties (reg), early stopping (early_stopping), trainer.seed, trainer.max_epochs, label_smoothing,
the model's initialization (model.init, model.init_args) and its dropout rates (model.*dropout).
Equal within a stack: everything else, e.g. the architecture, the data and its batch size, the optimizer's name,
precision, device. Pure functions of plain config dicts: `dltrain plan -m` and the vectorised launcher
(sweep/vectorized.py) group with the same function (`plan_stacks`, the group cap included).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PER_MEMBER_GROUPS = ("sched", "reg", "early_stopping")  # whole groups that a stack holds per member
PER_MEMBER_KEYS = ("trainer.seed", "trainer.max_epochs", "label_smoothing", "model.init", "model.init_args",
                   "trainer.resume")  # a re-run sweep's killed members each resume from their own last.pt


def numeric(value: Any) -> bool:
    """A number or a list of numbers (Adam's betas), never a boolean: what a stack can hold as per-member tensors."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(numeric(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def per_member(key: str, value: Any = None) -> bool:
    """Whether the dotted config key (with its value) may differ between the members of one stack: an optimizer's
    option only when numeric (exclude_bias_and_norm changes the parameter groups, so it must be equal)."""
    group = key.split(".", 1)[0]
    return (group in PER_MEMBER_GROUPS or key in PER_MEMBER_KEYS
            or (group == "optim" and key.count(".") == 1 and numeric(value))
            or (group == "model" and key.count(".") == 1 and key.endswith("dropout")))  # a dropout rate


def shared_part(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config without its per-member keys: what every member of a stack must have equal."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if per_member(name, value):
            continue
        out[key] = shared_part(value, f"{name}.") if isinstance(value, dict) else value
    return out


def stack_key(cfg: dict[str, Any]) -> str:
    """Equal for two configs exactly when they may share a stack."""
    return json.dumps(shared_part(cfg), sort_keys=True, default=str)


def stack_groups(configs: Sequence[dict[str, Any]]) -> list[list[int]]:
    """The indices of `configs` grouped into stacks, in order of first appearance (each group in config order)."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(stack_key(cfg), []).append(i)
    return list(groups.values())


def differing_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs (for saying why two groups cannot share a stack)."""
    keys: list[str] = []
    for key in sorted(set(a) | set(b), key=str):
        name, left, right = f"{prefix}{key}", a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys += differing_keys(left, right, f"{name}.")
        elif left != right:
            keys.append(name)
    return keys


@dataclass
class Unit:
    """What the vectorised launcher runs in one go: a stack of jobs, or one job alone (`reason` says why)."""

    jobs: list[int]  # indices into the sweep's jobs, in job order
    reason: str | None = None  # None: a stack of len(jobs) members


def capped(group: list[int], cap: int | None) -> list[list[int]]:
    """A group split, in order, into stacks of at most `cap` members (None: no cap, the trainer sizes its stack)."""
    if not cap or cap < 1:
        return [group]
    return [group[i:i + cap] for i in range(0, len(group), cap)]


def jobs_text(jobs: Sequence[int]) -> str:
    """Job numbers as counted on the terminal (from 1): `3`, `1-16` for a run, else `1, 3, 5`."""
    shown = [j + 1 for j in jobs]
    if len(shown) > 2 and shown == list(range(shown[0], shown[-1] + 1)):
        return f"{shown[0]}-{shown[-1]}"
    return ", ".join(str(j) for j in shown)


def plan_stacks(configs: Sequence[dict[str, Any] | None], alone: Sequence[str | None],
                cap: int | None = None) -> list[Unit]:
    """How the vectorised launcher runs a sweep's jobs: `configs[i]` is job i's resolved config (None: a job not
    to run, e.g. skipped or refused at the door), `alone[i]` why it cannot join a stack (None: it can). Stackable
    jobs are grouped by `stack_groups` and each group split at `cap`; a group of one runs alone, saying which keys
    keep it apart. Units in order of their first job."""
    candidates = [i for i, c in enumerate(configs) if c is not None and not alone[i]]
    groups = [[candidates[k] for k in g] for g in stack_groups([configs[i] for i in candidates])]
    units = [Unit([i], alone[i]) for i, c in enumerate(configs) if c is not None and alone[i]]
    for group in groups:
        for part in capped(group, cap):
            units.append(Unit(part) if len(part) > 1 else Unit(part, single_reason(part[0], group, groups, configs,
                                                                                     cap)))
    return sorted(units, key=lambda unit: unit.jobs[0])


def single_reason(job: int, group: list[int], groups: list[list[int]], configs: Sequence[Any], cap: int | None) -> str:
    """Why a stackable job ends up alone: left over by the cap, or its shared keys differ from every other job's."""
    if len(group) > 1:
        return f"left over by hydra.launcher.max_members={cap}"
    others = [g for g in groups if g is not group]
    if not others:
        return "no other job to stack it with"
    nearest = min(others, key=lambda g: len(differing_keys(shared_part(configs[job]), shared_part(configs[g[0]]))))
    keys = sorted(differing_keys(shared_part(configs[job]), shared_part(configs[nearest[0]])),
                  key=lambda k: not k.endswith(".name"))  # a group's choice first (model.name: mlp, cnn)
    shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
    return f"{shown} differ{'s' if len(keys) == 1 else ''} from job{'s' if len(nearest) > 1 else ''} " \
           f"{jobs_text(nearest)}, which must be equal within a stack"


def unit_line(unit: Unit, numbers: Sequence[int]) -> str:
    """What the launcher says of a unit, its jobs by number (from 0): `stacking jobs 1-16 (16 members)`, or
    `job 5 alone: <why>`."""
    if unit.reason is not None:
        return f"job {jobs_text(numbers)} alone: {unit.reason}"
    return f"stacking jobs {jobs_text(numbers)} ({len(numbers)} members)"
