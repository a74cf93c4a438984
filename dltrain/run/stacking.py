"""Which configs could train side by side as one stack (the vectorised launcher's rule, issue 21): members of a stack
share one data set on the device, one architecture and one step function, so they may differ only in keys that a
stacked step can hold per member, and must agree on everything else.

Per member (may differ): the optimizer's numeric options (optim.lr, betas, ...; not its name), the schedule
(sched), the penalties (reg), trainer.seed, trainer.max_epochs and a model's dropout rates (model.*dropout).
Equal within a stack: everything else, e.g. the architecture, the data and its batch size, the optimizer's name,
precision, device, early stopping. Pure functions of plain config dicts: `dltrain plan -m` shows the groups now;
the launcher, when it exists, groups with the same function.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

PER_MEMBER_GROUPS = ("sched", "reg")  # whole groups that a stack holds per member
PER_MEMBER_KEYS = ("trainer.seed", "trainer.max_epochs")


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
