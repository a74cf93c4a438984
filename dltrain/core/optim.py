"""Optimizers by short name: dltrain's built-ins (torch classes) and a user's own (`dltrain.register_optimizer`).

An optimizer is a registry builder `build(*, params, **options) -> torch.optim.Optimizer`. Its options come from
YAML (conf/optim/NAME.yaml) and are checked once by `parse_optimizer`: keys and types against the builder's
signature, value rules, and the optimizer's own range checks (it is built once on a dummy parameter); every
problem is one line. `build_optimizer` then builds it over `ParamGroup`s: `params` is a list of torch param-group
dicts, and the engine writes each group's "lr" before it steps (the schedule's lr times the group's lr_scale).

A built-in's options and defaults are stated once, in its YAML preset (conf/optim/NAME.yaml, read here; an
option's type is its default's). TABLE holds what YAML cannot: the torch class and the value rules beyond a type.

Weight decay is coupled (added to the gradient) for the built-ins but adamw, decoupled for adamw. With
`exclude_bias_and_norm: true` (every optimizer's option) parameters with ndim <= 1 (biases, norm scales and shifts)
get a torch group with weight_decay 0, as timm's `param_groups_weight_decay` (reg.penalized_weights' dim rule).
"""
from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import yaml

from dltrain.core.conf_dirs import config_dir
from dltrain.core.registry import ConfigError, Problems, Registry, Spec, check, check_kwargs, first_line

OPTIMIZERS = Registry("optim", runtime=("params",))
OURS = {"exclude_bias_and_norm": False}  # options every optimizer takes that its builder never sees


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
COMMON = (at_least_0("lr"), at_least_0("weight_decay"))  # every optimizer's, a user's too (where it has the key)


@dataclass(frozen=True)
class Row:
    """A built-in optimizer beside its YAML preset: its torch class and its value rules beyond the types."""

    cls: type[torch.optim.Optimizer]
    rules: tuple[Rule, ...] = ()


TABLE = {
    "sgd": Row(torch.optim.SGD),
    "momentum": Row(torch.optim.SGD, (in_unit("momentum"), NESTEROV)),
    "adagrad": Row(torch.optim.Adagrad),
    "rmsprop": Row(torch.optim.RMSprop, (in_unit("alpha"),)),
    "adadelta": Row(torch.optim.Adadelta, (in_unit("rho", closed=True),)),
    "adam": Row(torch.optim.Adam, (BETAS,)),
    "adamw": Row(torch.optim.AdamW, (BETAS,)),
}


def preset(name: str) -> dict[str, Any]:
    """Built-in `name`'s options and defaults: its YAML preset (conf/optim/NAME.yaml) without `name`."""
    node = yaml.safe_load((config_dir() / "optim" / f"{name}.yaml").read_text())
    return {k: v for k, v in node.items() if k != "name"}


def builtin(name: str, cls: type[torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """Built-in `name`'s builder, with the typed signature of its preset (an option's type is its default's; betas:
    a list of floats), so Registry.parse and check_kwargs check its keys as they check any builder's."""
    defaults = preset(name)
    types = {k: {bool: bool, int: float, float: float, list: list[float]}[type(v)] for k, v in defaults.items()}

    def builder(*, params: Any, **options: Any) -> torch.optim.Optimizer:
        return cls(params, **torch_kwargs(options))

    kw_only = inspect.Parameter.KEYWORD_ONLY
    builder.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("params", kw_only)]
        + [inspect.Parameter(k, kw_only, default=v, annotation=types[k]) for k, v in defaults.items()])
    builder.__annotations__ = types
    builder.__name__ = builder.__qualname__ = name
    return builder


for _name, _row in TABLE.items():
    OPTIMIZERS.register(_name, torch_class=_row.cls)(builtin(_name, _row.cls))


def register_optimizer(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`@register_optimizer(name)` on `build(*, params, **yaml_keys) -> torch.optim.Optimizer` (the facade's
    dltrain.register_optimizer). Its typed keyword arguments are the YAML's keys; `exclude_bias_and_norm` is
    added to them (dltrain's own: build_optimizer applies it to `params` and never passes it on)."""
    def add(build: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(build).parameters
        if "params" not in own:
            raise TypeError(f"register_optimizer({name!r}): {build.__name__} must take `params` (torch param groups)")
        hints = typing.get_type_hints(build, include_extras=True)  # resolved now: the wrapper has other globals
        kw_only = inspect.Parameter.KEYWORD_ONLY
        keys = [p.replace(kind=kw_only, annotation=hints.get(p.name, p.annotation)) for p in own.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in OURS]
        ours = [inspect.Parameter(k, kw_only, default=v, annotation=bool) for k, v in OURS.items()]
        rest = [p for p in own.values() if p.kind is p.VAR_KEYWORD]

        def builder(*, params: Any, **options: Any) -> torch.optim.Optimizer:
            return build(params=params, **{k: v for k, v in options.items() if k not in OURS})

        builder.__signature__ = inspect.Signature([*keys, *ours, *rest])  # type: ignore[attr-defined]
        builder.__annotations__ = {**{k: v for k, v in hints.items() if k != "return"}, **dict.fromkeys(OURS, bool)}
        builder.__name__ = builder.__qualname__ = name
        OPTIMIZERS.register(name)(builder)
        return build

    return add


def optimizer_class(name: str, options: Mapping[str, Any] | None = None) -> type[torch.optim.Optimizer]:
    """The class optimizer `name` builds (sgd and momentum are both SGD): lets a resume check compare classes. A
    user's optimizer is built once on a dummy parameter, with `options` (a run's optim node) over its defaults."""
    cls = OPTIMIZERS.traits(name).get("torch_class")  # "unknown optim 'x'; valid: ..." for a name not registered
    if cls is not None:
        return cls
    spec = Spec("optim", name, {k: v for k, v in (options or {}).items() if k != "name"})
    try:
        return type(build_optimizer(spec, [ParamGroup([torch.zeros(1, requires_grad=True)])]))
    except (ValueError, TypeError, RuntimeError) as err:  # ConfigError is a ValueError
        raise ConfigError(f"optim={name} cannot be built from these options: {first_line(err)}") from None


def parse_optimizer(node: Mapping[str, Any], built: bool = True) -> Spec:
    """Check an `optim` node once: keys, types, value rules and the optimizer's own range checks (it is built
    once on a dummy parameter; not when `built` is False: a trained run's optimizer that nothing will step).
    Every problem is one line of a single ConfigError."""
    check(isinstance(node, Mapping), f"optim must be a mapping of options, got {node!r}")
    name = node.get("name")
    check(isinstance(name, str), f"optim: missing 'name'; valid: {', '.join(OPTIMIZERS.names())}")
    OPTIMIZERS.get(name)  # "unknown optim 'x'; valid: ..."
    options = {k: v for k, v in node.items() if k != "name"}
    problems = Problems()
    bad = check_types(name, options, problems)
    good = {k: v for k, v in options.items() if k not in bad}
    bad |= check_values(name, good, problems)
    usable = {k: v for k, v in good.items() if k not in bad}
    if built and not missing_keys(name, usable):  # a builder missing a key would only repeat a line above
        check_built(name, usable, problems)
    problems.raise_if_any()
    return Spec("optim", name, options)


def check_types(name: str, options: Mapping[str, Any], problems: Problems) -> set[str]:
    """Unknown keys, wrong types and broken `Annotated` rules, one line each, then one line per required key
    (no default) that is missing; returns the keys that failed."""
    bad = set()
    for key, value in options.items():
        try:
            check_kwargs("optim", name, OPTIMIZERS.get(name), {key: value}, OPTIMIZERS.runtime)
        except ConfigError as err:  # lines about this key; "needs" lines about the others come once, below
            found = [line for line in err.problems if line.startswith(f"optim.{key}")]
            problems.found += found
            bad |= {key} if found else set()
    problems.found += [f"optim={name} needs optim.{key}" for key in missing_keys(name, options)]
    return bad


def rules_of(name: str) -> list[Rule]:
    """Finiteness of the float options first (then a NaN is not also 'below 0'), then the shared and the row's own
    checks."""
    hints = typing.get_type_hints(OPTIMIZERS.get(name))
    floats = [finite(k) for k in OPTIMIZERS.config_keys(name) if hints.get(k) is float]
    return [*floats, *COMMON, *(TABLE[name].rules if name in TABLE else ())]


def check_values(name: str, good: Mapping[str, Any], problems: Problems) -> set[str]:
    """The value rules over well-typed options (defaults filled in); returns the keys that failed."""
    defaults = OPTIMIZERS.options(name, {})
    merged = {**defaults, **good}
    bad = set()
    for rule in rules_of(name):
        if rule.key in merged and rule.key not in bad and not rule.ok(merged):
            problems.found.append(rule.message.format(**merged))
            bad.add(rule.key)
            merged[rule.key] = defaults.get(rule.key, merged[rule.key])  # later rules that read it see a sane value
    return bad


def missing_keys(name: str, options: Mapping[str, Any]) -> list[str]:
    """Options without a default (a user's builder may have some) that `options` lacks."""
    return [key for key in OPTIMIZERS.config_keys(name) if key not in OPTIMIZERS.options(name, options)]


def check_built(name: str, good: Mapping[str, Any], problems: Problems) -> None:
    """The optimizer's own checks (torch's, or a user's builder's): build it on a dummy parameter; each refusal
    names the option where the message allows, then that option falls back to its default and we try again, so
    every refusal is reported. A user's builder may also raise ConfigError lines of its own."""
    defaults = OPTIMIZERS.options(name, {})
    options = {**defaults, **good}
    cls = OPTIMIZERS.traits(name).get("torch_class")  # a built-in's; None for a user's builder
    who = f"torch.optim.{cls.__name__}" if cls is not None else f"optim={name}"
    for _ in range(len(options) + 1):  # at most one retry per option
        try:
            build_optimizer(Spec("optim", name, options), [ParamGroup([torch.zeros(1, requires_grad=True)])])
            return
        except ConfigError as err:
            problems.found += err.problems
            return
        except (ValueError, TypeError, RuntimeError) as err:
            key = refused_key(first_line(err), options)
            if key is None or (key in defaults and options[key] == defaults[key]):  # no key, or its default refused
                whole = f"optim={name}: {who}" if cls is not None else who
                problems.found.append(f"{whole} refuses these options: {first_line(err)}")
                return
            problems.found.append(f"optim.{key}={options[key]} is refused by {who}: {first_line(err)}")
            if key not in defaults:  # a user's key without a default: nothing to try instead
                return
            options[key] = defaults[key]


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
    not written into torch's groups: the engine holds the scales and sets each group's "lr" itself, so an optimizer
    must read its rate from its param groups (torch.optim.Optimizer's `defaults` put `lr` there)."""
    options = {**OPTIMIZERS.options(spec.name, {}), **spec.kwargs}
    exclude = options.pop("exclude_bias_and_norm", False)
    torch_groups: list[dict[str, Any]] = []
    for group in groups:
        params = list(group.params)
        if not exclude:
            torch_groups.append({"params": params})
            continue
        torch_groups.append({"params": [p for p in params if p.ndim >= 2]})
        torch_groups.append({"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0})
    optimizer = OPTIMIZERS.get(spec.name)(params=torch_groups, **options)
    check(isinstance(optimizer, torch.optim.Optimizer),
          f"optim={spec.name} built a {type(optimizer).__name__}, not a torch.optim.Optimizer")
    check(all("lr" in g for g in optimizer.param_groups), f"optim={spec.name}: its param groups have no 'lr', so "
          "the schedule cannot set it; pass lr in the defaults of torch.optim.Optimizer.__init__")
    return optimizer
