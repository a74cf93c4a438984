"""Optimizers by short name: one table row per name (torch class, YAML defaults, extra value checks).

An `optim` node is checked once by `parse_optimizer` (keys, types, our value checks and torch's own range
checks, every problem one line); `build_optimizer` then builds the optimizer over `ParamGroup`s.

Weight decay is an optimizer key: coupled (added to the gradient) for all but adamw, decoupled for adamw.
With `exclude_bias_and_norm: true` parameters with ndim <= 1 (biases, norm scales and shifts) get no weight
decay, as timm's `param_groups_weight_decay`; the dim rule is reg.penalized_weights' (dim >= 2 are weights).
"""
from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dltrain.core.registry import Problems, Registry, Spec, check, check_kwargs, first_line

OPTIMIZERS = Registry("optim", runtime=("params",))
OURS = {"exclude_bias_and_norm": False}  # options every optimizer takes that torch never sees


@dataclass
class ParamGroup:
    """Parameters that share a learning-rate scale (a GAN's generator and discriminator)."""

    params: list[torch.nn.Parameter]
    lr_scale: float = 1.0  # this group's lr = the schedule's lr * lr_scale


@dataclass(frozen=True)
class Rule:
    """A value check beyond the type: `ok(options)` must hold, else the line `message.format(**options)`."""

    key: str  # the option a failure is reported on (each option gets at most one line)
    ok: Callable[[dict[str, Any]], bool]
    message: str


def at_least_0(key: str) -> Rule:
    return Rule(key, lambda o: o[key] >= 0, f"optim.{key}={{{key}}} must be >= 0")


def in_unit(key: str, closed: bool = False) -> Rule:
    """key in [0, 1) (or [0, 1] when closed)."""
    return Rule(key, lambda o: 0.0 <= o[key] < 1.0 or (closed and o[key] == 1.0),
                f"optim.{key}={{{key}}} must be in [0, 1{']' if closed else ')'}")


def finite(key: str) -> Rule:
    return Rule(key, lambda o: is_finite(o[key]), f"optim.{key}={{{key}}} must be a finite number")


def is_finite(value: float) -> bool:
    try:  # an integer too large for a float (10**400) overflows instead of becoming inf
        return math.isfinite(value)
    except OverflowError:
        return False


BETAS = Rule("betas", lambda o: len(o["betas"]) == 2 and all(0.0 <= b < 1.0 for b in o["betas"]),
             "optim.betas={betas} must be two values in [0, 1)")
NESTEROV = Rule("nesterov", lambda o: not o["nesterov"] or (o["momentum"] > 0 and o["dampening"] == 0),
                "optim.nesterov needs momentum > 0 and dampening = 0")
COMMON = (at_least_0("lr"), at_least_0("weight_decay"))


@dataclass(frozen=True)
class Row:
    """One optimizer: its torch class, its options with defaults (a default's type is the option's type)."""

    cls: type[torch.optim.Optimizer]
    defaults: dict[str, Any]  # the YAML's keys, in its order, and their defaults (same values as conf/optim)
    rules: tuple[Rule, ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        return {**self.defaults, **OURS}

    def all_rules(self) -> list[Rule]:
        """Finiteness first (then a NaN is not also 'below 0'), then the shared and the row's own checks."""
        floats = [finite(k) for k, v in self.defaults.items() if isinstance(v, float)]
        return [*floats, *COMMON, *self.rules]


ADAM = {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}
TABLE = {
    "sgd": Row(torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.0}),
    "momentum": Row(torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": False, "dampening": 0.0,
                                      "weight_decay": 0.0}, (in_unit("momentum"), NESTEROV)),
    "adagrad": Row(torch.optim.Adagrad, {"lr": 0.05, "lr_decay": 0.0, "eps": 1e-10,
                                         "initial_accumulator_value": 0.0, "weight_decay": 0.0}),
    "rmsprop": Row(torch.optim.RMSprop, {"lr": 0.001, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0,
                                         "centered": False, "weight_decay": 0.0}, (in_unit("alpha"),)),
    "adadelta": Row(torch.optim.Adadelta, {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
                    (in_unit("rho", closed=True),)),
    "adam": Row(torch.optim.Adam, ADAM, (BETAS,)),
    "adamw": Row(torch.optim.AdamW, {**ADAM, "weight_decay": 0.01}, (BETAS,)),
}


def option_type(default: Any) -> Any:
    """The type an option's YAML value must have, from its default (betas: a list of two floats)."""
    return {bool: bool, float: float, tuple: list[float]}[type(default)]


def register(name: str, row: Row) -> None:
    """A registry builder with a generated typed signature, so Registry.parse / check_kwargs check its keys."""
    def builder(*, params: Any, **options: Any) -> torch.optim.Optimizer:
        return build_optimizer(Spec("optim", name, options), [ParamGroup(list(params))])

    hints = {k: option_type(v) for k, v in row.options.items()}
    kw_only = inspect.Parameter.KEYWORD_ONLY
    builder.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("params", kw_only)]
        + [inspect.Parameter(k, kw_only, default=v, annotation=hints[k]) for k, v in row.options.items()])
    builder.__annotations__ = hints
    builder.__name__ = builder.__qualname__ = name
    OPTIMIZERS.register(name, torch_class=row.cls)(builder)


for _name, _row in TABLE.items():
    register(_name, _row)


def row_of(name: str) -> Row:
    OPTIMIZERS.get(name)  # "unknown optim 'x'; valid: ..." for a name not in the table
    return TABLE[name]


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The torch class of optimizer `name` (sgd and momentum are both SGD): lets a resume check compare classes
    without building one."""
    return row_of(name).cls


def parse_optimizer(node: Mapping[str, Any]) -> Spec:
    """Check an `optim` node once: keys, types, our value checks and torch's own range checks (the optimizer is
    built once on a dummy parameter). Every problem is one line of a single ConfigError."""
    check(isinstance(node, Mapping), f"optim must be a mapping of options, got {node!r}")
    name = node.get("name")
    check(isinstance(name, str), f"optim: missing 'name'; valid: {', '.join(OPTIMIZERS.names())}")
    row = row_of(name)
    options = {k: v for k, v in node.items() if k != "name"}
    problems = Problems()
    bad = check_types(name, options, problems)
    good = {k: v for k, v in options.items() if k not in bad}
    bad |= check_values(row, good, problems)
    check_with_torch(name, row, {k: v for k, v in good.items() if k not in bad}, problems)
    problems.raise_if_any()
    return Spec("optim", name, options)


def check_types(name: str, options: Mapping[str, Any], problems: Problems) -> set[str]:
    """Unknown keys and wrong types, one line each; returns the keys that failed."""
    bad = set()
    for key, value in options.items():
        before = len(problems.found)
        with problems.collect():
            check_kwargs("optim", name, OPTIMIZERS.get(name), {key: value}, OPTIMIZERS.runtime)
        if len(problems.found) > before:
            bad.add(key)
    return bad


def check_values(row: Row, good: Mapping[str, Any], problems: Problems) -> set[str]:
    """The row's value rules over well-typed options (defaults filled in); returns the keys that failed."""
    merged = {**row.options, **good}
    bad = set()
    for rule in row.all_rules():
        if rule.key not in bad and not rule.ok(merged):
            problems.found.append(rule.message.format(**merged))
            bad.add(rule.key)
            merged[rule.key] = row.options[rule.key]  # later rules that read it see a sane value
    return bad


def check_with_torch(name: str, row: Row, good: Mapping[str, Any], problems: Problems) -> None:
    """Torch's own checks: build on a dummy parameter; each refusal names the option where the message allows,
    then that option falls back to its default and we try again, so every refusal is reported."""
    options = {**row.options, **good}
    for _ in range(len(options) + 1):  # at most one retry per option
        try:
            row.cls([torch.zeros(1, requires_grad=True)], **torch_kwargs(options))
            return
        except (ValueError, TypeError, RuntimeError) as err:
            key = refused_key(first_line(err), options)
            if key is None or options[key] == row.options[key]:
                problems.found.append(f"optim={name}: torch.optim.{row.cls.__name__} refuses these options: "
                                      f"{first_line(err)}")
                return
            problems.found.append(f"optim.{key}={options[key]} is refused by torch.optim.{row.cls.__name__}: "
                                  f"{first_line(err)}")
            options[key] = row.options[key]


# words in torch's messages that name an option differently ("Invalid epsilon value: -1.0")
ALIASES = {"nesterov": "nesterov", "learning rate": "lr", "epsilon": "eps", "beta": "betas"}


def refused_key(message: str, options: Mapping[str, Any]) -> str | None:
    """The option a torch ValueError is about, or None."""
    text = message.lower()
    for word, key in [*ALIASES.items(), *((k, k) for k in options)]:
        if key in options and re.search(rf"\b{re.escape(word)}\b", text):
            return key
    return None


def torch_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options torch takes (not ours), betas as the tuple torch expects."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k not in OURS}


def build_optimizer(spec: Spec, groups: list[ParamGroup]) -> torch.optim.Optimizer:
    """The optimizer over these groups (each torch param group gets its group's params), in the order of `groups`.

    With exclude_bias_and_norm on, each ParamGroup gives two torch groups, always both (torch allows an empty one),
    so ParamGroup i is torch groups 2i (ndim >= 2: decayed) and 2i + 1 (ndim <= 1: weight_decay 0). lr_scale is
    not written into torch's groups: the engine holds the scales."""
    row = row_of(spec.name)
    options = {**row.options, **spec.kwargs}
    torch_groups: list[dict[str, Any]] = []
    for group in groups:
        params = list(group.params)
        if not options["exclude_bias_and_norm"]:
            torch_groups.append({"params": params})
            continue
        torch_groups.append({"params": [p for p in params if p.ndim >= 2]})
        torch_groups.append({"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0})
    return row.cls(torch_groups, **torch_kwargs(options))
