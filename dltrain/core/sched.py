"""Learning-rate schedules as pure functions of t, the number of epochs or optimizer steps done.

A schedule is `lr_at(t) -> float`, so it has no state to lose in a checkpoint: the engine stores t.
A `sched` config node is checked once by `parse_schedule(node, lr0) -> ScheduleSpec` (every problem, one line
each) and turned into `lr_at` by `build_schedule(spec, lr0, total)`, total = the whole run's length in
interval units (epochs or optimizer steps, warm-up included).

Linear warm-up (`warmup` = W >= 0, in interval units; the convention of Keras CosineDecay(warmup_steps=W)):
  lr(t) = peak * (t + 1) / (W + 1)   for t < W         peak = decay(0): lr0, or values[0] for step with values
  lr(t) = decay(t - W)               for t >= W        so lr(W) = peak, and the decay starts after the warm-up
The decay schedules, with s = t - W (time since the end of warm-up; s = t without warm-up) and
s' = s / decay_steps (floored when staircase):
  constant:      lr0
  step:          values[i] for boundaries[i-1] <= s < boundaries[i]   (switches *at* the boundary, like torch
                 MultiStepLR; Keras PiecewiseConstantDecay switches one step later); values default to lr0*gamma^i
  exponential:   lr0 * exp(-k * s')
  inverse_time:  lr0 / (1 + k * s')
  cosine:        min_lr + (lr0 - min_lr) * (1 + cos(pi * min(s, T) / T)) / 2,  T = total - W (the decay's length),
                 so lr = lr0 at t = W and min_lr from t = total on
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from dltrain.core.registry import Problems, Registry, Spec, check, check_all

SCHEDULES = Registry("sched", runtime=("lr0", "total"))  # lr0 = optim.lr; total = the decay's length in t units
Schedule = Callable[[int], float]
OWN_KEYS = ("interval", "warmup")  # keys of every schedule, beside its decay builder's own


@dataclass(frozen=True)
class ScheduleSpec:
    """A checked `sched` node: the decay builder, what t counts and the warm-up before the decay."""

    name: str
    kwargs: dict[str, Any]  # the decay builder's own YAML keys (no name/interval/warmup)
    interval: Literal["epoch", "step"] = "epoch"  # what t counts: epochs done or optimizer steps done
    warmup: int = 0  # warm-up length W in interval units; 0 = none


def register_schedule(name: str) -> Callable[[Callable[..., Schedule]], Callable[..., Schedule]]:
    """`@register_schedule(name)` on `build(*, lr0, total, **yaml_keys) -> lr_at` (the facade's
    dltrain.register_schedule): `lr0` is optim.lr, `total` the decay's length in interval units (the run's, less
    the warm-up); `lr_at(s)` gives the rate at s = t - warmup. `interval` and `warmup` are every schedule's keys."""
    return SCHEDULES.register(name)


@SCHEDULES.register("constant")
def constant(*, lr0: float, total: int) -> Schedule:
    return lambda t: lr0


@SCHEDULES.register("step")
def step(*, lr0: float, total: int, boundaries: list[int], values: list[float] | None = None,
         gamma: float = 0.1) -> Schedule:
    """Piecewise constant; `values` are absolute learning rates, or null for lr0 * gamma**i."""
    given = values is not None  # explicit rates must be >= 0; gamma's are checked through gamma itself
    rates = list(values) if values is not None else [lr0 * gamma**i for i in range(len(boundaries) + 1)]
    check_all(
        (all(b > 0 for b in boundaries) and list(boundaries) == sorted(set(boundaries)),
         f"sched.boundaries={list(boundaries)} must be positive and strictly increasing"),
        (given or gamma > 0, f"sched.gamma={gamma} must be > 0"),
        (len(rates) == len(boundaries) + 1, f"sched.values has {len(rates)} entries but needs len(boundaries) + 1 = "
         f"{len(boundaries) + 1} (one learning rate before, between and after the boundaries)"),
        (not given or all(v >= 0 for v in rates), f"sched.values={rates} must be >= 0"),
    )
    return lambda t: rates[bisect.bisect_right(boundaries, t)]


def _decayed(decay_steps: float, staircase: bool, k: float) -> Callable[[int], float]:
    """s -> s' = s / decay_steps, floored when staircase."""
    check_all((decay_steps > 0, f"sched.decay_steps={decay_steps} must be > 0"), (k >= 0, f"sched.k={k} must be >= 0"))
    return lambda s: math.floor(s / decay_steps) if staircase else s / decay_steps


@SCHEDULES.register("exponential")
def exponential(*, lr0: float, total: int, k: float = 0.1, decay_steps: float = 1.0,
                staircase: bool = False) -> Schedule:
    scaled = _decayed(decay_steps, staircase, k)
    return lambda s: lr0 * math.exp(-k * scaled(s))


@SCHEDULES.register("inverse_time")
def inverse_time(*, lr0: float, total: int, k: float = 0.1, decay_steps: float = 1.0,
                 staircase: bool = False) -> Schedule:
    scaled = _decayed(decay_steps, staircase, k)
    return lambda s: lr0 / (1.0 + k * scaled(s))


@SCHEDULES.register("cosine")
def cosine(*, lr0: float, total: int, min_lr: float = 0.0) -> Schedule:
    """Annealing from lr0 at s = 0 to min_lr at s = total (the decay's length), then min_lr."""
    check(0 <= min_lr <= lr0, f"sched.min_lr={min_lr} must be in [0, optim.lr={lr0}]")
    return lambda s: min_lr + (lr0 - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(s, total) / max(total, 1)))


def _unknown_keys(node: Mapping[str, Any]) -> dict[str, str]:
    """Keys that neither the decay builder nor every schedule takes -> their message ({} while the name is bad:
    the registry reports that)."""
    name = node.get("name")
    if not isinstance(name, str) or name not in SCHEDULES.names():
        return {}
    valid = [*OWN_KEYS, *SCHEDULES.config_keys(name)]
    return {key: f"sched.{key} is not an option of sched={name}; valid: {', '.join(valid)}"
            for key in node if key != "name" and key not in valid}


def parse_schedule(node: Mapping[str, Any], lr0: float) -> ScheduleSpec:
    """Check a `sched` config node once (keys, types, interval, warmup and the builder's own value checks, the
    latter by building it once with total=1), raising one ConfigError with every problem, one line each."""
    check(isinstance(node, Mapping), f"sched must be a mapping of options, got {node!r}")
    problems = Problems()
    unknown = _unknown_keys(node)
    problems.found += unknown.values()
    decay: Spec | None = None
    with problems.collect():
        decay = SCHEDULES.parse(node, skip=(*OWN_KEYS, *unknown))
    interval, warmup = node.get("interval", "epoch"), node.get("warmup", 0)
    with problems.collect():
        check(interval in ("epoch", "step"), f"sched.interval='{interval}' must be 'epoch' or 'step'")
    with problems.collect():
        check(isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 0,
              f"sched.warmup={warmup} must be an integer >= 0")
    if decay is not None:
        with problems.collect():
            lr_at = SCHEDULES.build(decay, lr0=lr0, total=1)  # its value checks (boundaries, min_lr <= lr0, ...)
            check(callable(lr_at), f"sched={decay.name} built a {type(lr_at).__name__}, not a function lr_at(t)")
    problems.raise_if_any()
    assert decay is not None  # else parse's ConfigError was raised just above
    return ScheduleSpec(decay.name, dict(decay.kwargs), cast(Literal["epoch", "step"], interval), warmup)


def build_schedule(spec: ScheduleSpec, lr0: float, total: int) -> Schedule:
    """lr_at(t); `total` = the whole run's length in interval units (warm-up included)."""
    warmup = spec.warmup
    # the decay runs after the warm-up: its own clock is s = t - W and its length total - W (never negative)
    decay = SCHEDULES.build(Spec("sched", spec.name, spec.kwargs), lr0=lr0, total=max(total - warmup, 0))
    if warmup == 0:
        return decay
    peak = decay(0)  # the rate the warm-up ramps to: lr0, or values[0] for step with explicit values
    return lambda t: peak * (t + 1) / (warmup + 1) if t < warmup else decay(t - warmup)
