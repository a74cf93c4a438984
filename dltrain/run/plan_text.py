"""What `dltrain plan` prints for one run: its plan (run/preview.py measures it) as labelled lines, at most 110
columns wide; sizes in SI bytes, times in s/min/h."""
from __future__ import annotations

import torch

from dltrain.run.preview import RunPlan


def size_text(count: int) -> str:
    """Bytes in SI units: 512 B, 3.1 kB, 1.4 MB, 2.0 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def seconds_text(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    if seconds < 600:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 36000 else f"{seconds / 3600:.1f} h"


def memory_line(plan: RunPlan) -> str:
    """Weights, gradients, optimizer state, the best epoch's copy and one batch's activations, each as counted."""
    model, measured = plan.parts.model, plan.measured
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    best = weights if plan.parts.config.early_stopping.best.get("restore_best", True) else 0
    total = weights + grads + measured.optimizer_bytes + best + measured.activation_bytes
    per_param = measured.optimizer_bytes / max(grads, 1)
    parts = [f"weights {size_text(weights)}", f"grads {size_text(grads)}",
             f"optimizer {size_text(measured.optimizer_bytes)} ({plan.parts.config.optim.name}: {per_param:.3g}/param)"]
    if best:
        parts.append(f"best copy {size_text(best)}")
    parts.append(f"activations {size_text(measured.activation_bytes)}")
    peak = f"; measured {plan.device.type} peak {size_text(measured.device_peak)}" if measured.device_peak else ""
    return f"~{size_text(total)} + data: {' · '.join(parts)}{peak}"


WIDTH = 110  # columns of the plan's lines: label and text
MEMORY_HOW = "(activations: what autograd saves for backward in one batch; optimizer: its state after the timed steps)"


def steps_line(plan: RunPlan) -> str:
    config = plan.parts.config
    batch, n, epochs = config.data.batch_size, len(plan.parts.data.train), config.trainer.max_epochs
    last = n % batch
    if not last:
        tail = "no ragged last batch"
    elif plan.steps * batch < n:
        tail = f"last batch of {last} dropped: batch norm needs 2 per process"
    else:
        tail = f"last batch of {last} kept"
    ddp = f" over {plan.world} processes" if plan.world > 1 else ""
    return f"{plan.steps:,}/epoch ({n:,} / batch {batch}{ddp}, {tail}) × {epochs} epochs = {plan.steps * epochs:,}"


def stopping_line(plan: RunPlan) -> str:
    best, stopping = plan.parts.config.early_stopping.best, plan.parts.config.early_stopping.stopping
    watched = f"{best.get('monitor', 'val/loss')} ({'higher' if plan.parts.mode == 'max' else 'lower'} is better)"
    tested = "; the test uses the best epoch" if best.get("restore_best", True) else ""
    if not stopping.get("enabled", True):
        return f"off: all {plan.parts.config.trainer.max_epochs} epochs run; best epoch by {watched}{tested}"
    start = best.get("start_from_epoch", 0)
    after = f" after epoch {start}" if start else ""
    return (f"watches {watched}: stops after {stopping.get('patience', 5)} epochs without an improvement > "
            f"{best.get('min_delta', 0.0):g}{after}{tested}")


def device_line(plan: RunPlan) -> str:
    trainer, chosen = plan.parts.config.trainer, plan.thread_choice
    name = f"cuda ({torch.cuda.get_device_name(plan.device)})" if plan.device.type == "cuda" else plan.device.type
    flops = chosen.flops_per_step / 1e6
    why = chosen.source if chosen.source != "rule" else f"rule: {flops:,.1f} MFLOP forward per step"
    workers = f" × {plan.world} DDP processes" if plan.world > 1 else ""
    return (f"{name}{workers} · {chosen.threads} thread{'s' if chosen.threads > 1 else ''} ({why}) · precision "
            f"{trainer.precision} · compile {'on' if trainer.compile else 'off'}")


def time_lines(plan: RunPlan) -> list[str]:
    train, val = plan.epoch_seconds
    epochs = plan.parts.config.trainer.max_epochs
    one = ", one process's share of the batch" if plan.world > 1 else ""
    return [f"~{seconds_text(train + val)}/epoch (train {seconds_text(train)} + val {seconds_text(val)}) · "
            f"~{seconds_text(plan.run_seconds())} for the run (build, {epochs} epochs, test)",
            f"ESTIMATE from {plan.measured.steps_timed} timed steps{one}; not counted: checkpoint and TensorBoard "
            "writes; early stopping may end it sooner"]


def describe(plan: RunPlan) -> list[str]:
    """The plan as labelled lines (the label column 11 wide)."""
    from dltrain.run.lr_curve import describe as lr_lines

    parts, config = plan.parts, plan.parts.config
    data = parts.data
    shape = tuple(data.in_shape)
    rows = [("model", f"{config.model.name}: {plan.params:,} parameters"
                      + (f" ({plan.trainable:,} trainable)" if plan.trainable != plan.params else "")),
            ("data", f"{config.data.spec.name} ({parts.task_name}): {len(data.train):,} train · {len(data.val):,} "
                     f"val · {len(data.test):,} test, each {shape}; "
                     f"{size_text(sum(s.x.nbytes + s.y.nbytes for s in (data.train, data.val, data.test)))} "
                     f"held on {plan.device.type}"),
            ("steps", steps_line(plan)),
            ("memory", memory_line(plan)), ("memory", MEMORY_HOW)]
    settings = plan.settings
    total = config.trainer.max_epochs * (plan.steps if settings.lr_per_step else 1)
    rows += [("lr", line) for line in lr_lines(settings.lr_at, config.sched, total, settings.lr_per_step, plan.steps)]
    rows += [("early stop", stopping_line(plan)), ("device", device_line(plan))]
    rows += [("time", line) for line in time_lines(plan)]
    out, last = [], None
    for label, text in rows:
        out += [f"{'' if label == last or k else label:<11}{piece}" for k, piece in enumerate(wrapped(text))]
        last = label
    return out


def wrapped(text: str, width: int = WIDTH - 11) -> list[str]:
    """`text` in lines of at most `width` characters, broken after a ` · ` or `; ` (a phrase stays whole; one
    longer than `width` is broken at its spaces), continuation lines indented by 2."""
    import re
    import textwrap

    lines: list[str] = []
    for piece in re.split(r"(?<= ·) |(?<=;) ", text):
        room = width - (2 if lines else 0)
        if lines and len(lines[-1]) + 1 + len(piece) <= width - (2 if len(lines) > 1 else 0):
            lines[-1] += f" {piece}"
        else:
            lines += textwrap.wrap(piece, room, break_long_words=False) or [piece]
    return [line if k == 0 else f"  {line}" for k, line in enumerate(lines)]
