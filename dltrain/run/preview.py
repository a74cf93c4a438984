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
