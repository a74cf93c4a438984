"""The learning rate over a whole run, for `dltrain plan`: the schedule (core/sched.py, a pure function lr_at(t)) is
sampled at every t of the run, so what is shown is exactly what the engine will set, and its turning points are
read off the same samples: the start, the end of the warm-up, each boundary of a step schedule, the minimum and
maximum, the end. Nothing here builds a model or touches a device.
"""
from __future__ import annotations

from dataclasses import dataclass

from dltrain.core.sched import Schedule, ScheduleSpec

BARS = "▁▂▃▄▅▆▇█"  # eight levels between the run's lowest and highest rate
MAX_SAMPLES = 200_000  # beyond this many t values the curve is sampled evenly (a schedule call is ~0.2 us)


@dataclass(frozen=True)
class Turn:
    """A turning point: at t the rate is `lr`; `before` is lr(t - 1) where the rate jumps there (else None)."""

    t: int
    what: str  # start | warm-up end | boundary | min | max | end
    lr: float
    before: float | None = None


@dataclass(frozen=True)
class Curve:
    """The rate at each sampled t of a run of `total` t units (epochs or optimizer steps)."""

    ts: list[int]
    lrs: list[float]
    total: int
    per_step: bool  # t counts optimizer steps (else epochs)


def sample(lr_at: Schedule, total: int, per_step: bool) -> Curve:
    """lr_at(t) for t = 0 .. total-1 (every t up to MAX_SAMPLES, else evenly spaced ones, the last included)."""
    total = max(total, 1)
    stride = max(1, -(-total // MAX_SAMPLES))
    ts = list(range(0, total, stride))
    if ts[-1] != total - 1:
        ts.append(total - 1)
    return Curve(ts, [float(lr_at(t)) for t in ts], total, per_step)


def known_turns(spec: ScheduleSpec, total: int) -> list[tuple[int, str]]:
    """Where the schedule's own keys say the rate turns: the warm-up's end (t = W, where lr = the peak) and a step
    schedule's boundaries (t = W + b: the rate switches at the boundary)."""
    turns = [(spec.warmup, "warm-up end")] if spec.warmup else []
    if spec.name == "step":
        turns += [(spec.warmup + int(b), "boundary") for b in spec.kwargs.get("boundaries", [])]
    return [(t, what) for t, what in turns if 0 < t < total]


def turning_points(lr_at: Schedule, curve: Curve, spec: ScheduleSpec) -> list[Turn]:
    """The start, the schedule's own turns (known_turns), the min and max when they fall elsewhere, the end."""
    marks: dict[int, str] = {0: "start"}
    for t, what in known_turns(spec, curve.total):
        marks.setdefault(t, what)
    lo = min(range(len(curve.lrs)), key=lambda i: (curve.lrs[i], i))
    hi = min(range(len(curve.lrs)), key=lambda i: (-curve.lrs[i], i))
    if curve.lrs[lo] != curve.lrs[hi]:  # a constant rate has no minimum or maximum to point at
        for i, what in ((lo, "min"), (hi, "max")):
            if not any(lr_at(t) == curve.lrs[i] for t in marks):
                marks.setdefault(curve.ts[i], what)
    marks.setdefault(curve.total - 1, "end")
    turns = []
    for t in sorted(marks):
        now, before = float(lr_at(t)), float(lr_at(t - 1)) if t > 0 else None
        turns.append(Turn(t, marks[t], now, before if before is not None and before != now and
                          marks[t] in ("warm-up end", "boundary") else None))
    return turns


def sparkline(curve: Curve, width: int = 48) -> str:
    """The curve in `width` columns or fewer (one per t for a short run), each the rate at its column's t."""
    n = len(curve.lrs)
    picks = list(range(n)) if n <= width else [round(i * (n - 1) / (width - 1)) for i in range(width)]
    lo, hi = min(curve.lrs), max(curve.lrs)
    if hi == lo:
        return BARS[-1] * len(picks)
    return "".join(BARS[min(len(BARS) - 1, int((curve.lrs[i] - lo) / (hi - lo) * len(BARS)))] for i in picks)


def lr_text(value: float) -> str:
    return f"{value:.4g}"


def turn_text(turn: Turn, per_step: bool, steps_per_epoch: int) -> str:
    """e.g. `epoch 10 boundary 0.1→0.01`, `step 1875 (epoch 1) warm-up end 0.1`."""
    where = f"epoch {turn.t}"
    if per_step:
        epochs = turn.t / max(steps_per_epoch, 1)
        where = f"step {turn.t:,} (epoch {epochs:.3g})"
    value = f"{lr_text(turn.before)}→{lr_text(turn.lr)}" if turn.before is not None else lr_text(turn.lr)
    return f"{where} {turn.what} {value}"


def describe(lr_at: Schedule, spec: ScheduleSpec, total: int, per_step: bool, steps_per_epoch: int,
             width: int = 48) -> list[str]:
    """Two lines: the schedule and its sparkline with the range; the turning points with their rates."""
    curve = sample(lr_at, total, per_step)
    unit = "optimizer steps" if per_step else "epochs"
    warm = f", warm-up {spec.warmup}" if spec.warmup else ""
    lo, hi = min(curve.lrs), max(curve.lrs)
    span = lr_text(lo) if lo == hi else f"{lr_text(lo)} .. {lr_text(hi)}"
    every = "step" if per_step else "epoch"
    head = f"{spec.name} per {every}{warm}, {total:,} {unit}: {sparkline(curve, width)}  {span}"
    turns = turning_points(lr_at, curve, spec)
    shown = turns if len(turns) <= 8 else [*turns[:6], turns[-1]]  # a long step list: the first ones and the end
    more = f" (+{len(turns) - len(shown)} more)" if len(shown) < len(turns) else ""
    return [head, " · ".join(turn_text(t, per_step, steps_per_epoch) for t in shown) + more]
