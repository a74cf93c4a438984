"""Learning-rate schedules as pure functions of t, the number of epochs or optimizer steps done.

A schedule is `lr_at(t) -> float`, so it has no state to lose in a checkpoint: the engine stores t.
With t' = t / decay_steps (floored when staircase):
  constant:      lr0
  step:          values[i] for boundaries[i-1] <= t < boundaries[i]   (switches *at* the boundary, like torch
                 MultiStepLR; Keras PiecewiseConstantDecay switches one step later); values default to lr0*gamma^i
  exponential:   lr0 * exp(-k * t')
  inverse_time:  lr0 / (1 + k * t')
  cosine:        min_lr + (lr0 - min_lr) * (1 + cos(pi * t / total)) / 2, total = the run's length in t units
Linear warm-up (`warmup` = W > 0, in the same units) multiplies any of these by (t + 1) / (W + 1) while t < W.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from typing import Any

from dltrain.registry import Registry, check

SCHEDULES = Registry("sched")
Schedule = Callable[[int], float]


@SCHEDULES.register("constant")
def constant(*, lr0: float, total: int) -> Schedule:
    return lambda t: lr0


@SCHEDULES.register("step")
def step(*, lr0: float, total: int, boundaries: list[int], values: list[float] | None = None,
         gamma: float = 0.1) -> Schedule:
    """Piecewise constant; `values` are absolute learning rates, or null for lr0 * gamma**i."""
    check(all(b > 0 for b in boundaries) and list(boundaries) == sorted(set(boundaries)),
          f"sched.boundaries={list(boundaries)} must be positive and strictly increasing")
    if values is None:
        check(gamma > 0, f"sched.gamma={gamma} must be > 0")
        values = [lr0 * gamma**i for i in range(len(boundaries) + 1)]
    check(len(values) == len(boundaries) + 1, f"sched.values has {len(values)} entries but needs "
          f"len(boundaries) + 1 = {len(boundaries) + 1} (one learning rate before, between and after the boundaries)")
    check(all(v >= 0 for v in values), f"sched.values={list(values)} must be >= 0")
    return lambda t: values[bisect.bisect_right(boundaries, t)]


def _decayed(decay_steps: float, staircase: bool, k: float) -> Callable[[int], float]:
    check(decay_steps > 0, f"sched.decay_steps={decay_steps} must be > 0")
    check(k >= 0, f"sched.k={k} must be >= 0")
    return lambda t: math.floor(t / decay_steps) if staircase else t / decay_steps


@SCHEDULES.register("exponential")
def exponential(*, lr0: float, total: int, k: float = 0.1, decay_steps: float = 1.0,
                staircase: bool = False) -> Schedule:
    scaled = _decayed(decay_steps, staircase, k)
    return lambda t: lr0 * math.exp(-k * scaled(t))


@SCHEDULES.register("inverse_time")
def inverse_time(*, lr0: float, total: int, k: float = 0.1, decay_steps: float = 1.0,
                 staircase: bool = False) -> Schedule:
    scaled = _decayed(decay_steps, staircase, k)
    return lambda t: lr0 / (1.0 + k * scaled(t))


@SCHEDULES.register("cosine")
def cosine(*, lr0: float, total: int, min_lr: float = 0.0) -> Schedule:
    check(0 <= min_lr <= lr0, f"sched.min_lr={min_lr} must be in [0, optim.lr={lr0}]")
    return lambda t: min_lr + (lr0 - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / max(total, 1)))


def build_schedule(node: Mapping[str, Any], lr0: float, total: int) -> Schedule:
    """The schedule of a `sched` config node; `total` is the run's length in its interval units."""
    interval, warmup = node.get("interval", "epoch"), node.get("warmup", 0)
    check(interval in ("epoch", "step"), f"sched.interval='{interval}' must be 'epoch' or 'step'")
    check(isinstance(warmup, int) and warmup >= 0, f"sched.warmup={warmup} must be an integer >= 0")
    decay = SCHEDULES.build(node, skip=("interval", "warmup"), lr0=lr0, total=total)
    if warmup == 0:
        return decay
    return lambda t: decay(t) * (t + 1) / (warmup + 1) if t < warmup else decay(t)
