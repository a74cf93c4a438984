"""Small explicit registries: a name -> builder dict, filled by a `@register(name)` decorator.

A builder is a plain function with typed keyword arguments. `Registry.build(node, **runtime)` takes a
config node (a mapping with `name` and the builder's keyword arguments), checks every key against the
builder's signature and type hints, and calls it. Run-time-only arguments (input shape, parameters,
total steps) come from the caller, never from YAML.
"""
from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class ConfigError(ValueError):
    """A user error in the configuration; reported as one line, never with a traceback."""


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


class Registry:
    """Builders of one kind (model, data, optim, ...) keyed by short names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            return builder

        return add

    def names(self) -> list[str]:
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ConfigError(f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}")
        return self._builders[name]

    def config_keys(self, name: str, runtime: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
        """The keyword arguments of builder `name` that a config may set (all but `runtime`)."""
        params = inspect.signature(self.get(name)).parameters
        return {k: p for k, p in params.items() if k not in runtime and p.kind is not p.VAR_KEYWORD}

    def build(self, node: Mapping[str, Any], skip: tuple[str, ...] = (), **runtime: Any) -> Any:
        """Check `node` against the builder's signature, then call builder(**runtime, **node)."""
        name = node.get("name")
        check(isinstance(name, str), f"{self.kind}: missing 'name'; valid: {', '.join(self.names())}")
        kwargs = {k: v for k, v in node.items() if k != "name" and k not in skip}
        check_kwargs(self.kind, name, self.get(name), kwargs, tuple(runtime))
        return self.get(name)(**runtime, **kwargs)


def check_kwargs(kind: str, name: str, builder: Callable[..., Any], kwargs: Mapping[str, Any],
                 runtime: tuple[str, ...] = ()) -> None:
    """Unknown keys, missing required keys and wrong types become one-line ConfigErrors."""
    params = inspect.signature(builder).parameters
    hints = typing.get_type_hints(builder)
    allowed = [k for k in params if k not in runtime]
    where = f"{kind}={name}" if name else kind  # nodes without a builder name: trainer, reg, ...
    for key, value in kwargs.items():
        check(key in params and key not in runtime, f"{kind}.{key} is not an option of {where}; valid: {', '.join(allowed)}")
        if key in hints and typing.get_origin(hints[key]) is typing.Literal and not matches(value, hints[key]):
            raise ConfigError(f"{kind}.{key}={value!r} is not a choice of {where}; valid: {type_name(hints[key])}")
        if key in hints and not matches(value, hints[key]):
            raise ConfigError(f"{kind}.{key}={value!r} has the wrong type for {where}: expected {type_name(hints[key])}")
    for key in allowed:
        p = params[key]
        if p.default is p.empty and p.kind is not p.VAR_KEYWORD and key not in kwargs:
            raise ConfigError(f"{where} needs {kind}.{key}")


def matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type hint (int is accepted for float; bool is not an int)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
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
