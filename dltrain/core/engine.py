"""The training engine: one loop for every task and model.

`fit` runs epochs of `train_epoch` (shuffle by a device permutation, slice batches, one optimizer step each, or
one per `accumulate` batches whose gradients it sums: core/accumulate.py) and `evaluate`, judges the epoch against
the monitored metric (`state.best`), hands it to the callbacks (which may set `state.should_stop`), then tests.
Data already sits on the device; losses and metrics accumulate there as one vector and reach the host (one sync)
only every `log_every_n_steps` optimizer steps and at the end of an epoch.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from dltrain.core import dist
from dltrain.core.accumulate import micro_batches, sync_unless
from dltrain.core.best import Best  # noqa: F401  (re-exported: engine.Best is its old home)
from dltrain.core.ema import Ema, served
from dltrain.core.reg import penalized_weights, penalty
from dltrain.core.sched import Schedule
from dltrain.core.tasks import Task

NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)  # need 2+ samples in training


@dataclass
class Split:
    """One split held in memory: inputs `x` (N, *sample_shape) and targets `y` (N, ...). What the engine trains on
    and a dataset builder returns (dltrain.data re-exports it: `dltrain.Split` is this class)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class State:
    """Everything that changes during a run; callbacks read it and may set `should_stop`."""

    model: nn.Module  # what the step calls (possibly DDP- and compile-wrapped)
    raw_model: nn.Module  # the plain module: its state_dict is what checkpoints hold
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    best: Best = field(default_factory=Best)
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    metrics: dict[str, float] = field(default_factory=dict)  # the last epoch's, e.g. {"val/loss": 0.3}
    test_metrics: dict[str, float] = field(default_factory=dict)  # after fit, e.g. {"test/acc": 0.95}
    should_stop: bool = False
    stop_reason: str = "max_epochs reached"
    train_seconds: float = 0.0  # wall time spent in training epochs (s)
    samples_seen: int = 0
    rng: list[dict[str, torch.Tensor]] = field(default_factory=list)  # every rank's RNG state at the epoch's end
    ema: Ema | None = None  # trainer.ema: the averaged weights that are validated, judged, tested and served


class Callback(Protocol):
    """The loop's events. Subclass it to inherit no-ops for the events you don't need. A callback with state
    that must survive a resume returns it from `state_dict` (plain values): checkpoints hold every callback's."""

    def on_fit_start(self, state: State) -> None: ...
    def on_train_log(self, state: State, values: dict[str, float]) -> None: ...
    def on_epoch_end(self, state: State) -> None: ...  # state.metrics and state.best hold this epoch's
    def on_train_end(self, state: State) -> None: ...  # best weights restored, before the test split
    def on_fit_end(self, state: State) -> None: ...  # state.test_metrics hold the test metrics
    # on_train_step(state), after each optimizer step, is called only on callbacks that define it (Python per
    # step: the built-in profiler's, on while trainer.profile > 0); it is not part of this protocol's no-ops.

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        return None


@dataclass
class LoopSettings:
    """The loop's fixed knobs (plain values, built from the run config by build.py)."""

    max_epochs: int
    batch_size: int  # global: summed over all processes
    lr_at: Schedule
    lr_per_step: bool  # t counts optimizer steps (True) or epochs (False)
    lr_scales: tuple[float, ...] = ()  # per optimizer param group: its lr = lr_at(t) * scale (a GAN's two nets)
    seed: int = 0
    autocast_dtype: torch.dtype | None = None
    grad_clip: float | None = None
    l1: float = 0.0
    l2: float = 0.0
    log_every_n_steps: int = 50
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    accumulate: int = 1  # batches whose gradients one optimizer step sums (the last group of an epoch may be fewer)


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random state: the CPU generator and, once CUDA is in use, its current device's."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_lr(optimizer: torch.optim.Optimizer, lr: float, scales: Sequence[float]) -> None:
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr * (scales[i] if i < len(scales) else 1.0)


def all_reduce_means_to_host(sums: torch.Tensor, names: Sequence[str], count: int, prefix: str) -> dict[str, float]:
    """Global means of a metric-sum vector over `count` samples: one all-reduce, then one host sync."""
    values = dist.all_reduce_sum(sums.clone()).tolist()
    return {f"{prefix}/{name}": value / max(count, 1) for name, value in zip(names, values)}


def local_batch(train: Split, global_idx: torch.Tensor, augment: Callable | None,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of a global batch (every world_size-th sample)."""
    rank, world = dist.rank(), dist.world_size()
    mine = global_idx[rank::world] if world > 1 else global_idx
    if augment is None:
        return train.x[mine], train.y[mine]
    # augment the whole global batch, then share it: the same draws whatever the number of processes
    return augment(train.x[global_idx], gen)[rank::world], train.y[mine]


def min_share(model: nn.Module) -> int:
    """Samples each process needs in a training batch: batch norm needs two, so a smaller last batch is dropped."""
    return 2 if any(isinstance(m, NORM_LAYERS) for m in model.modules()) else 1


def steps_per_epoch(train_size: int, batch_size: int, world: int, share: int, accumulate: int = 1) -> int:
    """Optimizer steps in one epoch: the global batches, less a last one too small to share (see min_share), one
    step per `accumulate` of them (the epoch's last group may be shorter: ceil(batches / accumulate))."""
    return sum(micro.last for micro in micro_batches(train_size, batch_size, world, share, accumulate))


def train_epoch(state: State, task: Task, train: Split, settings: LoopSettings,
                callbacks: Sequence[Callback]) -> dict[str, float]:
    """One pass over the train split in global batches; returns the epoch's train metrics."""
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    device, n, world = train.x.device, len(train), dist.world_size()
    names = ("loss", *task.metric_names)
    gen = torch.Generator(device=device).manual_seed(settings.seed * 1_000_003 + state.epoch)  # same on every rank
    perm = torch.randperm(n, device=device, generator=gen)
    weights = penalized_weights(state.raw_model) if (settings.l1 or settings.l2) else []
    share = min_share(state.raw_model)
    sums = torch.zeros(len(names), device=device)  # float32 metric sums of the epoch, in `names` order
    grad_seeds: dict[int, torch.Tensor] = {}  # group's samples -> d(loss)/d(loss_sum), made once on the device
    seen = 0
    step_hooks = [cb.on_train_step for cb in callbacks if hasattr(cb, "on_train_step")]  # optional: the profiler's
    model.train()
    for micro in micro_batches(n, settings.batch_size, world, share, settings.accumulate):  # less a too small last
        global_idx = perm[micro.start:micro.start + micro.count]
        batch_count, group_count = micro.count, micro.group_count  # equal when accumulate=1
        x, y = local_batch(train, global_idx, settings.augment, gen)
        if settings.lr_per_step and micro.first:
            set_lr(optimizer, settings.lr_at(state.step), settings.lr_scales)
        with autocast(device, settings.autocast_dtype), sync_unless(model, micro.last):
            loss_sum, batch_sums = task.step(model, x, y)
        # The loss is loss_sum * world / group_count: with DDP's gradient average, summed over the group's batches,
        # that is the mean over the group's samples, exactly (the global batch mean when accumulate=1). The factor
        # seeds the backward pass instead of multiplying the loss (two kernels fewer a step).
        if group_count not in grad_seeds:
            grad_seeds[group_count] = torch.full((), world / group_count, device=device)
        if weights and micro.last:  # once per optimizer step; skipped entirely without a penalty: no extra kernel
            loss_sum = loss_sum + penalty(weights, settings.l1, settings.l2) * (group_count / world)
        if micro.first:
            optimizer.zero_grad(set_to_none=True)
        loss_sum.backward(scaler.scale(grad_seeds[group_count]))  # fp16: times the GradScaler's loss scale
        sums.add_(batch_sums)  # one kernel, no sync
        seen += batch_count
        if not micro.last:  # the next batch of the group adds its gradient to .grad
            continue
        optimizer_step(state, settings.grad_clip)
        if settings.log_every_n_steps and state.step % settings.log_every_n_steps == 0:
            running = all_reduce_means_to_host(sums, names, seen, "train")  # on every rank: a collective
            for cb in callbacks:
                cb.on_train_log(state, running)
        for hook in step_hooks:  # none unless a callback defines on_train_step: no op, no sync added per step
            hook(state)
    state.samples_seen += seen
    return all_reduce_means_to_host(sums, names, seen, "train")


def optimizer_step(state: State, grad_clip: float) -> None:
    """Once per optimizer step, on the group's summed gradient: clip, step (through the GradScaler), the EMA."""
    if grad_clip:
        state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.raw_model.parameters(), grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if state.ema is not None:  # on the device (core/ema.py)
        state.ema.update()
    state.step += 1


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, split: Split, batch_size: int, prefix: str,
             autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Metrics over a whole split; each process takes every world_size-th sample, sums are all-reduced."""
    if len(split) == 0:
        return {}
    model.eval()
    rank, world = dist.rank(), dist.world_size()
    names = ("loss", *task.metric_names)
    idx_all = torch.arange(rank, len(split), world, device=split.x.device)
    sums = torch.zeros(len(names), device=split.x.device)
    for start in range(0, len(idx_all), batch_size):  # an empty share keeps zero sums for the all-reduce
        idx = idx_all[start:start + batch_size]
        with autocast(split.x.device, autocast_dtype):
            _, batch_sums = task.step(model, split.x[idx], split.y[idx])
        sums.add_(batch_sums)
    return all_reduce_means_to_host(sums, names, len(split), prefix)


def fit(state: State, task: Task, train: Split, val: Split, test: Split, settings: LoopSettings,
        callbacks: Sequence[Callback]) -> State:
    """Train until max_epochs or a callback stops the run, then evaluate the test split."""
    for cb in callbacks:
        cb.on_fit_start(state)
    while state.epoch < settings.max_epochs and not state.should_stop:
        fit_epoch(state, task, train, val, settings, callbacks)
    end_fit(state, task, test, settings, callbacks)
    return state


def end_fit(state: State, task: Task, test: Split, settings: LoopSettings, callbacks: Sequence[Callback]) -> None:
    """After the last epoch (of `fit`, or of a stack's member: run/stacked.py): the best weights restored, the test
    split evaluated, the callbacks' last events."""
    restore_best_weights(state)
    for cb in callbacks:
        cb.on_train_end(state)
    state.test_metrics = evaluate(served(state.ema, state.model), task, test, settings.batch_size, "test",
                                  settings.autocast_dtype)
    state.test_metrics.update(task.derived(state.test_metrics))
    for cb in callbacks:
        cb.on_fit_end(state)


def fit_epoch(state: State, task: Task, train: Split, val: Split, settings: LoopSettings,
              callbacks: Sequence[Callback]) -> None:
    """One epoch of `fit`: train, validate, judge (`state.best`), call back."""
    shown = served(state.ema, state.model)  # validated and tested: trainer.ema's averaged copy, or the model
    lr = settings.lr_at(state.step if settings.lr_per_step else state.epoch)
    if not settings.lr_per_step:
        set_lr(state.optimizer, lr, settings.lr_scales)
    started = time.perf_counter()
    metrics = train_epoch(state, task, train, settings, callbacks)
    seconds = time.perf_counter() - started  # the host read above synced the device
    state.train_seconds += seconds
    metrics.update(evaluate(shown, task, val, settings.batch_size, "val", settings.autocast_dtype))
    metrics.update(task.derived(metrics))
    metrics.update({"lr": lr, "throughput/samples_per_sec": len(train) / seconds, "time/epoch_sec": seconds})
    end_epoch(state, metrics, callbacks)


def end_epoch(state: State, metrics: dict[str, float], callbacks: Sequence[Callback]) -> None:
    """An epoch's end, however it was trained (by `fit_epoch`, or as a stack's member): counted, judged
    (`state.best`), the RNG state kept, called back."""
    state.epoch += 1
    state.metrics = metrics
    state.best.update(metrics, state.epoch, served(state.ema, state.raw_model))
    state.rng = dist.all_gather_object(rng_state())  # so a resume gives each rank its own stream back
    for cb in callbacks:
        cb.on_epoch_end(state)


def restore_best_weights(state: State) -> None:
    """With restore_best, test (and keep) the best epoch's weights rather than the last's (trainer.ema: the EMA's)."""
    best = state.best
    if best.restore_best and best.weights is not None and best.epoch != state.epoch:
        served(state.ema, state.raw_model).load_state_dict(best.weights)
