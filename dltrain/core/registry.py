"""Small explicit registries: a name -> builder dict, filled by a `@register(name)` decorator.

A builder is a plain function with typed keyword arguments. A config node (a mapping with `name` and the
builder's keyword arguments) is checked once, at the door, by `Registry.parse(node) -> Spec`: every key
against the builder's signature and type hints. `Registry.build(spec, **runtime)` then calls the builder
with the run-time-only arguments (input shape, parameters, total steps), which never come from YAML.
A registration may carry traits (e.g. a model's `channels_last`): declared metadata instead of attribute probes.
Value rules (`Annotated[int, Positive]`, dltrain/rules.py) sit beside each keyword's type; a rule over several
keys is the registration's `check`, called at the door with every option (defaults filled in); `inputs` checks
the files a builder will read (that they exist, a CSV's header), at the door of a training run only: a saved run
is predicted from elsewhere without its training files.
"""
from __future__ import annotations

import contextlib
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass
from typing import Any

from dltrain.core.rules import broken_rule, shown


class ConfigError(ValueError):
    """User errors in the configuration, one line each; reported without a traceback."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def check_all(*conditions: tuple[bool, str]) -> None:
    """One ConfigError naming every failed (condition, message), so a user fixes them in one go."""
    failed = [message for ok, message in conditions if not ok]
    if failed:
        raise ConfigError(*failed)


def first_line(err: BaseException, limit: int = 300) -> str:
    """An exception's first non-empty line (its type name when it has no message), for one-line reports."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]


class Problems:
    """Collects every ConfigError of a parse instead of stopping at the first (torchtune's ConfigError(errors))."""

    def __init__(self) -> None:
        self.found: list[str] = []

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as err:
            self.found += err.problems

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(*self.found)


@dataclass(frozen=True)
class Spec:
    """A checked choice of a registry: the builder's name and its keyword arguments from YAML."""

    kind: str  # the registry: model, data, optim, sched
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Builders of one kind (model, data, optim, ...) keyed by short names."""

    def __init__(self, kind: str, runtime: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.runtime = runtime  # the builders' run-time-only arguments, never set in YAML
        self._builders: dict[str, Callable[..., Any]] = {}
        self._traits: dict[str, dict[str, Any]] = {}
        self._checks: dict[str, tuple[Callable[..., None] | None, Callable[..., None] | None]] = {}

    def register(self, name: str, check: Callable[..., None] | None = None, inputs: Callable[..., None] | None = None,
                 **traits: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """`check(**options)` and `inputs(**options)`, if given, raise ConfigError: a rule over several options, and
        a problem with the files the builder would read (both at the door, before anything is built)."""
        def add(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            self._traits[name] = traits
            self._checks[name] = (check, inputs)
            return builder

        return add

    def names(self) -> list[str]:
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ConfigError(f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}")
        return self._builders[name]

    def traits(self, name: str) -> dict[str, Any]:
        """What the registration declared about builder `name` (e.g. channels_last=True)."""
        self.get(name)
        return dict(self._traits[name])

    def builder_args(self, name: str) -> list[str]:
        """Every keyword argument builder `name` takes, run-time ones included."""
        return list(inspect.signature(self.get(name)).parameters)

    def config_keys(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword arguments of builder `name` that a config may set (all but the run-time ones)."""
        params = inspect.signature(self.get(name)).parameters
        return {k: p for k, p in params.items() if k not in self.runtime and p.kind is not p.VAR_KEYWORD}

    def parse(self, node: Any, skip: tuple[str, ...] = ()) -> Spec:
        """Check a config node against its builder's signature; `skip` keys belong to the caller."""
        check(isinstance(node, Mapping), f"{self.kind} must be a mapping of options, got {node!r}")
        name = node.get("name")
        check(isinstance(name, str), f"{self.kind}: missing 'name'; valid: {', '.join(self.names())}")
        kwargs = {k: v for k, v in node.items() if k != "name" and k not in skip}
        check_kwargs(self.kind, name, self.get(name), kwargs, self.runtime)
        rule = self._checks[name][0]
        if rule is not None:
            rule(**self.options(name, kwargs))
        return Spec(self.kind, name, kwargs)

    def check_inputs(self, spec: Spec) -> None:
        """The registration's `inputs` check of a parsed spec: the files its builder will read."""
        inputs = self._checks[spec.name][1]
        if inputs is not None:
            inputs(**self.options(spec.name, spec.kwargs))

    def options(self, name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Every config option of builder `name`: `kwargs` over the signature's defaults."""
        defaults = {k: p.default for k, p in self.config_keys(name).items() if p.default is not p.empty}
        return {**defaults, **kwargs}

    def build(self, spec: Spec, **runtime: Any) -> Any:
        """builder(**runtime, **spec.kwargs)."""
        return self.get(spec.name)(**runtime, **spec.kwargs)


def check_kwargs(kind: str, name: str, builder: Callable[..., Any], kwargs: Mapping[str, Any],
                 runtime: tuple[str, ...] = ()) -> None:
    """Unknown keys, missing required keys and wrong types: every problem, one line each."""
    params = inspect.signature(builder).parameters
    typed = builder.__init__ if isinstance(builder, type) and not is_dataclass(builder) else builder  # a Callback's
    hints = typing.get_type_hints(typed)
    ruled = typing.get_type_hints(typed, include_extras=True)
    allowed = [k for k in params if k not in runtime and params[k].kind is not params[k].VAR_KEYWORD]
    where = f"{kind}={name}" if name else kind  # nodes without a builder name: trainer, reg, ...
    problems = Problems()
    for key, value in kwargs.items():
        with problems.collect():
            check(key in allowed, f"{kind}.{key} is not an option of {where}; valid: {', '.join(allowed)}")
            if key in hints and typing.get_origin(hints[key]) is typing.Literal and not matches(value, hints[key]):
                raise ConfigError(f"{kind}.{key}={value!r} is not a choice of {where}; valid: {type_name(hints[key])}")
            if key in hints and hints[key] is bool and not isinstance(value, bool):  # 'off' would be truthy
                raise ConfigError(f"{kind}.{key}={value!r} is not a boolean: write true or false")
            if key in hints and not matches(value, hints[key]):
                raise ConfigError(f"{kind}.{key}={value!r} has the wrong type for {where}: expected {type_name(hints[key])}")
            broken = broken_rule(value, ruled.get(key))
            check(broken is None, f"{kind}.{key}={shown(value)} {broken}")
    for key in allowed:
        if params[key].default is params[key].empty and key not in kwargs:
            problems.found.append(f"{where} needs {kind}.{key}")
    problems.raise_if_any()


def matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type hint (int is accepted for float; bool is not an int)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is typing.Literal:  # by type too: 1 == True, but 1 is not the choice `true`
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(hint))
    if origin in (list, tuple, Sequence):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(matches(v, inner) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, Mapping)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "")
