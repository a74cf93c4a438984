"""One run's plan, without training it (`dltrain plan`): the run's real parts are built on the CPU as a run builds
them (assemble.build), then measured. Counted: the parameters, the steps per epoch and in all (the engine's own
steps_per_epoch, so a dropped last batch is as the run will drop it), the learning rate at every t (lr_curve.py),
what early stopping watches. Measured: a few real training steps of the engine's own train_epoch on a copy of
the model (2 to warm up, 5 timed, with the run's threads, device and precision), from which an epoch's time is
*estimated*; the optimizer's state after them; the tensors autograd saves for backward in one batch (the
activations), with autograd's saved-tensor hooks, which count on any device (the CPU has no memory counter).
Nothing here writes a file: no callback is built, no run folder is made.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import torch

from dltrain.core import dist
from dltrain.core.engine import LoopSettings, Split, State, evaluate, min_share, steps_per_epoch, train_epoch
from dltrain.core.env import omp_threads
from dltrain.run import threads
from dltrain.run.assemble import (
    RunComponents,
    build,
    make_best,
    make_optimizer,
    make_settings,
    pick_device,
    to_device,
    wrap_model,
)
from dltrain.run.config import RunConfig

WARMUP_STEPS, TIMED_STEPS = 2, 5  # steps run before timing (first-call costs, compile), then timed


@dataclass
class Measured:
    """What the timed steps measured; seconds are wall time of this process."""

    step_seconds: float  # one optimizer step
    val_seconds_per_sample: float  # evaluation, per sample (val and test alike)
    optimizer_bytes: int  # the optimizer's state after the steps (Adam: 2 tensors per parameter; SGD: none)
    activation_bytes: int  # tensors autograd saved for backward in one batch (parameters excluded)
    device_peak: int | None  # CUDA's peak allocated memory during the steps (None: the CPU has no counter)
    steps_timed: int


@dataclass
class RunPlan:
    parts: RunComponents
    settings: LoopSettings  # the run's own (its lr_at, batch size), as assemble makes them
    device: torch.device
    world: int  # processes of the run (trainer.devices)
    steps: int  # optimizer steps per epoch, as the engine takes them
    thread_choice: threads.ThreadChoice
    build_seconds: float  # data and model built, measured here
    measured: Measured
    warnings: list[str] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.parts.model.parameters())

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.parts.model.parameters() if p.requires_grad)

    @property
    def epoch_seconds(self) -> tuple[float, float]:
        """(train, validation) seconds of one epoch: estimates from the timed steps."""
        return (self.measured.step_seconds * self.steps,
                self.measured.val_seconds_per_sample * len(self.parts.data.val))

    def run_seconds(self, epochs: int | None = None, built: bool = True) -> float:
        """`epochs` epochs (all of them by default) and the test, and the build when `built` (as measured here, this
        process's first imports included): an estimate (early stopping may end the run sooner)."""
        train, val = self.epoch_seconds
        epochs = self.parts.config.trainer.max_epochs if epochs is None else epochs
        test = self.measured.val_seconds_per_sample * len(self.parts.data.test)
        return (self.build_seconds if built else 0.0) + epochs * (train + val) + test


def plan_run(config: RunConfig) -> RunPlan:
    """Build the run's parts as a run does, choose its threads, and time a few steps on a copy of the model."""
    started = time.perf_counter()
    parts = build(config)
    build_seconds = time.perf_counter() - started
    trainer = config.trainer
    world = max(trainer.devices, 1)
    chosen = choose_threads(parts, world)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(chosen.threads)
    try:
        device = pick_device(trainer)
        settings, measured = measure(parts, device, world)
    finally:
        torch.set_num_threads(saved_threads)
    steps = steps_per_epoch(len(parts.data.train), config.data.batch_size, world, min_share(parts.model))
    return RunPlan(parts, settings, device, world, steps, chosen, build_seconds, measured, list(parts.warnings))


def choose_threads(parts: RunComponents, world: int) -> threads.ThreadChoice:
    """The threads each of the run's processes will train with (threads.py's rule, as assemble applies it): its
    share of the batch and, with several DDP workers, its share of the cores."""
    trainer = parts.config.trainer
    flops = threads.forward_flops(parts.model, parts.data.train.x[:1]) * (parts.config.data.batch_size // world)
    recorded = threads.recorded_threads(trainer.resume) if trainer.resume else None
    cores = max(1, dist.cores_per_process() // world)  # a worker shares this machine's cores with the others
    return threads.choose(flops, cores, trainer.threads, recorded, omp_threads())


def measure(parts: RunComponents, device: torch.device, world: int) -> tuple[LoopSettings, Measured]:
    """Time WARMUP_STEPS + TIMED_STEPS steps of train_epoch and a few validation batches on a copy of the model
    on `device`; with several DDP workers, one worker's share of the batch (without their all-reduce)."""
    twin = dataclasses.replace(parts, model=copy.deepcopy(parts.model))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, channels_last = wrap_model(twin, device)
    optimizer, scales = make_optimizer(twin)
    trainer = parts.config.trainer
    state = State(model=model, raw_model=twin.model, optimizer=optimizer, best=make_best(parts),
                  scaler=torch.amp.GradScaler(device.type, enabled=str(trainer.precision) == "16"))
    settings = make_settings(twin, len(parts.data.train), scales)
    local = dataclasses.replace(settings, batch_size=max(settings.batch_size // world, 1), log_every_n_steps=0)
    size = max(WARMUP_STEPS, TIMED_STEPS) * local.batch_size  # only the batches timed go to the device
    train, val = (to_device(Split(s.x[:size], s.y[:size]), device, channels_last)
                  for s in (parts.data.train, parts.data.val))
    run_steps(state, twin, train, local, WARMUP_STEPS)
    started = time.perf_counter()
    done = run_steps(state, twin, train, local, TIMED_STEPS)
    step_seconds = (time.perf_counter() - started) / max(done, 1)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                      if torch.is_tensor(t))
    return settings, Measured(step_seconds, val_seconds_per_sample(model, twin, val, local), state_bytes,
                              activation_bytes(model, twin, train, local), peak, done)


def run_steps(state: State, parts: RunComponents, train: Split, settings: LoopSettings, steps: int) -> int:
    """`steps` optimizer steps of the engine's own epoch loop, on the first `steps` batches; the steps taken."""
    size = min(len(train), steps * settings.batch_size)
    train_epoch(state, parts.task, Split(train.x[:size], train.y[:size]), settings, [])
    return steps_per_epoch(size, settings.batch_size, 1, min_share(parts.model))


def val_seconds_per_sample(model: torch.nn.Module, parts: RunComponents, val: Split, settings: LoopSettings) -> float:
    """Seconds per sample of the engine's evaluate, timed on up to TIMED_STEPS batches after one to warm up."""
    if len(val) == 0:
        return 0.0
    batch = settings.batch_size
    evaluate(model, parts.task, Split(val.x[:batch], val.y[:batch]), batch, "val", settings.autocast_dtype)
    size = min(len(val), TIMED_STEPS * batch)
    started = time.perf_counter()
    evaluate(model, parts.task, Split(val.x[:size], val.y[:size]), batch, "val", settings.autocast_dtype)
    return (time.perf_counter() - started) / size


def activation_bytes(model: torch.nn.Module, parts: RunComponents, train: Split, settings: LoopSettings) -> int:
    """Bytes of the tensors autograd keeps for backward in one training batch (each storage once, the parameters'
    own excluded): the activations a step holds at its peak, the forward's temporaries aside."""
    from dltrain.core.engine import autocast

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    idx = torch.arange(min(settings.batch_size, len(train)), device=train.x.device)
    x, y = train.x[idx], train.y[idx]  # a batch of its own, as the engine's indexing makes it (not a view)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with autocast(x.device, settings.autocast_dtype):
            loss, _ = parts.task.step(model, x, y)
    del loss
    return sum(seen.values())


# ---- the plan as text: one labelled line per subject, read in seconds ----------------------------------------

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
