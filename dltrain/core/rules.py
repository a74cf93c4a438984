"""Value rules of builder options, declared beside their types and checked at the door (before any data is
built or model constructed): `kernel_size: Annotated[int, Positive] = 5`, `dropout: Annotated[float, Fraction]`,
`channels: Annotated[list[int], Positive, NonEmpty]`. A number rule on a list checks every entry.

`registry.check_kwargs` reads them from a builder's (or a config dataclass's) type hints, so one mechanism covers
every model, data and callback option, a user's own builders included (`from dltrain.core.rules import Positive`).
A rule that needs several options at once is a `check=` function given at registration (`Registry.register`).
"""
from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """A number, or every number of a list, within bounds (`ge`/`gt` below, `le`/`lt` above)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return all(self.holds(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True  # not a number: the type check reports it
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def says(self, value: Any) -> str:
        low = [f"{op} {bound:g}" for op, bound in ((">=", self.ge), (">", self.gt)) if bound is not None]
        high = [f"{op} {bound:g}" for op, bound in (("<=", self.le), ("<", self.lt)) if bound is not None]
        if low and high:  # [0, 1) reads better than ">= 0 and < 1"
            text = f"in {'[' if self.ge is not None else '('}{low[0].split()[1]}, " \
                   f"{high[0].split()[1]}{']' if self.le is not None else ')'}"
        else:
            text = (low or high)[0]
        return f"must hold numbers {text}" if isinstance(value, (list, tuple)) else f"must be {text}"


@dataclass(frozen=True)
class Length:
    """A list of `min` to `max` entries."""

    min: int = 0
    max: int | None = None

    def holds(self, value: Any) -> bool:
        return not isinstance(value, (list, tuple)) or (
            len(value) >= self.min and (self.max is None or len(value) <= self.max))

    def says(self, value: Any) -> str:
        if self.max == self.min:
            return f"must list exactly {self.min} values"
        if self.max is None:
            return "must list at least one value" if self.min == 1 else f"must list at least {self.min} values"
        return f"must list {self.min} to {self.max} values"


@dataclass(frozen=True)
class Check:
    """Any other rule of one option: `ok(value)` must hold, else `message` (e.g. 'must be one character')."""

    ok: Callable[[Any], bool]
    message: str

    def holds(self, value: Any) -> bool:
        return value is None or bool(self.ok(value))

    def says(self, value: Any) -> str:
        return self.message


Positive = Range(gt=0)  # sizes, strides, widths, counts
NonNegative = Range(ge=0)  # paddings, penalties, noise levels
Fraction = Range(ge=0, lt=1)  # dropout, label smoothing: 1.0 would drop (or smooth) everything
NonEmpty = Length(min=1)
Seed = Check(lambda seed: 0 <= seed < 2**63, "must be in [0, 2**63)")  # what torch's generators take
RULE_TYPES = (Range, Length, Check)


def rules_of(hint: Any) -> list[Any]:
    """The rules an `Annotated[...]` hint carries (also inside `X | None`)."""
    if typing.get_origin(hint) is typing.Annotated:
        return [m for m in hint.__metadata__ if isinstance(m, RULE_TYPES)] + rules_of(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [rule for arg in typing.get_args(hint) for rule in rules_of(arg)]
    return []


def broken_rule(value: Any, hint: Any) -> str | None:
    """What the first rule that `value` breaks says ('must be > 0'), or None."""
    for rule in rules_of(hint):
        if value is not None and not rule.holds(value):
            return rule.says(value)
    return None


def shown(value: Any) -> str:
    """A value as the user wrote it on the command line: numbers and lists plainly, text quoted."""
    if isinstance(value, tuple):
        return str(list(value))
    return repr(value) if isinstance(value, str) else str(value)
