"""The training engine: one loop for every task and model.

`fit` runs epochs of `train_epoch` (shuffle by a device permutation, slice batches, one optimizer step each)
and `evaluate`, judges the epoch against the monitored metric (`state.best`), hands it to the callbacks
(which may set `state.should_stop`), then tests. Data already sits on the device; losses and metrics
accumulate there as one vector and reach the host (one sync) only every `log_every_n_steps` steps and at the
end of an epoch.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from dltrain.core import dist
from dltrain.core.ema import Ema, served
from dltrain.core.reg import penalized_weights, penalty
from dltrain.core.sched import Schedule
from dltrain.core.tasks import Task, metric_direction

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
class Best:
    """The monitored metric and its best epoch so far. The engine updates it after each epoch, before any
    callback runs, so every callback (early stopping, checkpoints, TensorBoard) sees the same judgement
    whatever their order. Its options are the early_stopping group's keys of the same names."""

    monitor: str = "val/loss"  # metric that judges the epochs
    mode: Literal["auto", "min", "max"] = "auto"  # auto: the task's direction for the monitor (assemble.make_best)
    min_delta: float = 0.0  # an improvement must exceed this (metric units)
    start_from_epoch: int = 0  # epochs up to this one are not judged (warm-up)
    restore_best: bool = True  # keep the best weights and load them before testing
    value: float | None = field(default=None, init=False)
    epoch: int = field(default=0, init=False)  # 0: none yet
    improved: bool = field(default=False, init=False)  # the epoch just ended is the best so far
    nonfinite: bool = field(default=False, init=False)  # the epoch just ended has a NaN/inf loss or monitored value
    weights: dict[str, torch.Tensor] | None = field(default=None, init=False, repr=False)  # on the device

    def __post_init__(self) -> None:
        if self.mode == "auto" and metric_direction(None, self.monitor) is not None:  # the loss: every task's
            self.mode = metric_direction(None, self.monitor)  # type: ignore[assignment]

    def better(self, value: float, reference: float) -> bool:
        if self.mode not in ("min", "max"):
            raise ValueError(f"Best.mode={self.mode!r}: resolve auto with dltrain.core.tasks.monitor_mode first")
        delta = abs(self.min_delta)
        return value < reference - delta if self.mode == "min" else value > reference + delta

    def update(self, metrics: dict[str, float], epoch: int, model: nn.Module) -> None:
        """Judge epoch `epoch` (1-based) by its metrics; copy the model's weights when it is the best."""
        value = metrics.get(self.monitor, math.nan)
        self.nonfinite = not all(math.isfinite(v) for v in (value, metrics.get("train/loss", 0.0)))
        self.improved = (not self.nonfinite and epoch > self.start_from_epoch
                         and (self.value is None or self.better(value, self.value)))
        if self.improved:
            self.value, self.epoch = value, epoch
            if self.restore_best:  # a copy on the device: no host transfer per improvement
                self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "value": self.value, "epoch": self.epoch}

    def load_state_dict(self, saved: dict[str, Any], weights: dict[str, torch.Tensor] | None) -> None:
        if (saved.get("monitor"), saved.get("mode")) != (self.monitor, self.mode):
            return  # another monitored metric: its best starts afresh
        self.value, self.epoch = saved["value"], saved["epoch"]
        self.weights = weights if self.restore_best else None


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


def steps_per_epoch(train_size: int, batch_size: int, world: int, share: int) -> int:
    """Optimizer steps in one epoch: the global batches, less a last one too small to share (see min_share)."""
    full, last = divmod(train_size, batch_size)
    return full + (1 if last and last // world >= share else 0) if batch_size // world >= share else 0


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
    grad_seeds: dict[int, torch.Tensor] = {}  # batch size -> d(loss)/d(loss_sum), made once on the device
    seen = 0
    model.train()
    for start in range(0, n, settings.batch_size):
        global_idx = perm[start:start + settings.batch_size]
        batch_count = len(global_idx)
        if batch_count // world < share:  # too small to give each process its share: dropped
            continue
        x, y = local_batch(train, global_idx, settings.augment, gen)
        if settings.lr_per_step:
            set_lr(optimizer, settings.lr_at(state.step), settings.lr_scales)
        with autocast(device, settings.autocast_dtype):
            loss_sum, batch_sums = task.step(model, x, y)
        # The loss is loss_sum * world / batch_count: with DDP's gradient average that is the global batch mean,
        # exactly. The factor seeds the backward pass instead of multiplying the loss (two kernels fewer a step).
        if batch_count not in grad_seeds:
            grad_seeds[batch_count] = torch.full((), world / batch_count, device=device)
        if weights:  # skipped entirely without a penalty: no extra kernel per step
            loss_sum = loss_sum + penalty(weights, settings.l1, settings.l2) * (batch_count / world)
        optimizer.zero_grad(set_to_none=True)
        loss_sum.backward(scaler.scale(grad_seeds[batch_count]))  # fp16: times the GradScaler's loss scale
        if settings.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(state.raw_model.parameters(), settings.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if state.ema is not None:  # once per optimizer step, on the device (core/ema.py)
            state.ema.update()
        sums.add_(batch_sums)  # one kernel, no sync
        seen += batch_count
        state.step += 1
        if settings.log_every_n_steps and state.step % settings.log_every_n_steps == 0:
            running = all_reduce_means_to_host(sums, names, seen, "train")  # on every rank: a collective
            for cb in callbacks:
                cb.on_train_log(state, running)
    state.samples_seen += seen
    return all_reduce_means_to_host(sums, names, seen, "train")


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
    shown = served(state.ema, state.model)  # validated and tested: trainer.ema's averaged copy, or the model
    while state.epoch < settings.max_epochs and not state.should_stop:
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
        state.epoch += 1
        state.metrics = metrics
        state.best.update(metrics, state.epoch, served(state.ema, state.raw_model))
        state.rng = dist.all_gather_object(rng_state())  # so a resume gives each rank its own stream back
        for cb in callbacks:
            cb.on_epoch_end(state)
    restore_best_weights(state)
    for cb in callbacks:
        cb.on_train_end(state)
    state.test_metrics = evaluate(shown, task, test, settings.batch_size, "test", settings.autocast_dtype)
    state.test_metrics.update(task.derived(state.test_metrics))
    for cb in callbacks:
        cb.on_fit_end(state)
    return state


def restore_best_weights(state: State) -> None:
    """With restore_best, test (and keep) the best epoch's weights rather than the last's (trainer.ema: the EMA's)."""
    best = state.best
    if best.restore_best and best.weights is not None and best.epoch != state.epoch:
        served(state.ema, state.raw_model).load_state_dict(best.weights)
