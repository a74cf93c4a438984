"""The training engine: one loop for every task and model.

`fit` runs epochs of `train_epoch` (shuffle by a device permutation, slice batches, one optimizer step each)
and `evaluate`, hands the epoch's metrics to the callbacks (which may set `state.should_stop`), then tests.
Data already sits on the device; losses and metrics accumulate there and are read (one host sync) only every
`log_every_n_steps` steps and at the end of an epoch.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from dltrain import dist
from dltrain.data import Split
from dltrain.reg import penalized_weights, penalty
from dltrain.sched import Schedule
from dltrain.tasks import Task


@dataclass
class State:
    """Everything that changes during a run; callbacks read it and may set `should_stop`."""

    model: nn.Module  # what the step calls (possibly DDP- and compile-wrapped)
    raw_model: nn.Module  # the plain module: its state_dict is what checkpoints hold
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    metrics: dict[str, float] = field(default_factory=dict)  # the last epoch's, e.g. {"val/loss": 0.3}
    final: dict[str, float] = field(default_factory=dict)  # test metrics, after fit
    should_stop: bool = False
    stop_reason: str = "max_epochs reached"
    train_seconds: float = 0.0  # wall time spent in training epochs (s)
    samples_seen: int = 0
    rng: list[dict[str, torch.Tensor]] = field(default_factory=list)  # every rank's RNG state at the epoch's end


class Callback(Protocol):
    """Events of the loop. All are optional to act on; implement the ones you need as no-ops otherwise."""

    def on_fit_start(self, state: State) -> None: ...
    def on_train_log(self, state: State, values: dict[str, float]) -> None: ...
    def on_epoch_end(self, state: State) -> None: ...
    def on_train_end(self, state: State) -> None: ...  # before the test split: may restore the best weights
    def on_fit_end(self, state: State) -> None: ...  # state.final holds the test metrics


@dataclass
class Settings:
    """The loop's fixed knobs (plain values, built from the trainer config by train.py)."""

    max_epochs: int
    batch_size: int  # global: summed over all processes
    lr_at: Schedule
    lr_per_step: bool  # t counts optimizer steps (True) or epochs (False)
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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def read(sums: dict[str, torch.Tensor], count: int, prefix: str) -> dict[str, float]:
    """Global means of metric sums over `count` samples: one all-reduce and one host sync."""
    names = sorted(sums)
    values = dist.all_reduce_sum(torch.stack([sums[k] for k in names])).tolist()
    return {f"{prefix}/{k}": v / max(count, 1) for k, v in zip(names, values)}


def local_batch(train: Split, global_idx: torch.Tensor, augment: Callable | None,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of a global batch (every world_size-th sample)."""
    rank, world = dist.rank(), dist.world_size()
    mine = global_idx[rank::world] if world > 1 else global_idx
    if augment is None:
        return train.x[mine], train.y[mine]
    # augment the whole global batch, then share it: the same draws whatever the number of processes
    return augment(train.x[global_idx], gen)[rank::world], train.y[mine]


def accumulate(sums: dict[str, torch.Tensor], batch_sums: dict[str, torch.Tensor]) -> None:
    """Add a batch's metric sums into the running float32 sums, in place: one fused kernel on CUDA, no sync."""
    if not sums:
        sums.update({key: value.detach().float().clone() for key, value in batch_sums.items()})
    else:
        torch._foreach_add_([sums[key] for key in batch_sums], list(batch_sums.values()))


def train_epoch(state: State, task: Task, train: Split, s: Settings, callbacks: Sequence[Callback]) -> dict[str, float]:
    """One pass over the train split in global batches; returns the epoch's train metrics."""
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    device, n = train.x.device, len(train)
    world = dist.world_size()
    gen = torch.Generator(device=device).manual_seed(s.seed * 1_000_003 + state.epoch)  # same order on every rank
    perm = torch.randperm(n, device=device, generator=gen)
    weights = penalized_weights(state.raw_model) if (s.l1 or s.l2) else []
    # batch norm needs two samples per process: a last batch too small for that is dropped
    min_share = 2 if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in state.raw_model.modules()) else 1
    sums: dict[str, torch.Tensor] = {}
    grad_seeds: dict[int, torch.Tensor] = {}  # batch size -> d(loss)/d(loss_sum), made once on the device
    seen = 0
    model.train()
    for start in range(0, n, s.batch_size):
        global_idx = perm[start:start + s.batch_size]
        batch_count = len(global_idx)
        if batch_count // world < min_share:
            continue
        x, y = local_batch(train, global_idx, s.augment, gen)
        if s.lr_per_step:
            set_lr(optimizer, s.lr_at(state.step))
        with autocast(device, s.autocast_dtype):
            loss_sum, batch_sums = task.step(model, x, y)
        # The loss is loss_sum * world / batch_count: with DDP's gradient average that is the global batch mean,
        # exactly. The factor seeds the backward pass instead of multiplying the loss (two kernels fewer a step).
        if batch_count not in grad_seeds:
            grad_seeds[batch_count] = torch.full((), world / batch_count, device=device)
        if weights:  # skipped entirely without a penalty: no extra kernel per step
            loss_sum = loss_sum + penalty(weights, s.l1, s.l2) * (batch_count / world)
        optimizer.zero_grad(set_to_none=True)
        loss_sum.backward(scaler.scale(grad_seeds[batch_count]))  # fp16: times the GradScaler's loss scale
        if s.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(state.raw_model.parameters(), s.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        accumulate(sums, batch_sums)
        seen += batch_count
        state.step += 1
        if s.log_every_n_steps and state.step % s.log_every_n_steps == 0:
            running = read(sums, seen, "train")  # on every rank: it is a collective
            for cb in callbacks:
                cb.on_train_log(state, running)
    state.samples_seen += seen
    return read(sums, seen, "train")


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, split: Split, batch_size: int, prefix: str,
             autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Metrics over a whole split; each process takes every world_size-th sample, sums are all-reduced."""
    if len(split) == 0:
        return {}
    model.eval()
    rank, world = dist.rank(), dist.world_size()
    idx_all = torch.arange(rank, len(split), world, device=split.x.device)
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, max(len(idx_all), 1), batch_size):  # an empty share still gives (zero) sums
        idx = idx_all[start:start + batch_size]
        with autocast(split.x.device, autocast_dtype):
            _, batch_sums = task.step(model, split.x[idx], split.y[idx])
        accumulate(sums, batch_sums)
    return read(sums, len(split), prefix)


def fit(state: State, task: Task, train: Split, val: Split, test: Split, s: Settings,
        callbacks: Sequence[Callback]) -> State:
    """Train until max_epochs or a callback stops the run, then evaluate the test split."""
    for cb in callbacks:
        cb.on_fit_start(state)
    while state.epoch < s.max_epochs and not state.should_stop:
        lr = s.lr_at(state.step if s.lr_per_step else state.epoch)
        if not s.lr_per_step:
            set_lr(state.optimizer, lr)
        started = time.perf_counter()
        metrics = train_epoch(state, task, train, s, callbacks)
        seconds = time.perf_counter() - started  # read() above synced the device
        state.train_seconds += seconds
        metrics.update(evaluate(state.model, task, val, s.batch_size, "val", s.autocast_dtype))
        metrics.update(task.derived(metrics))
        metrics.update({"lr": lr, "throughput/samples_per_sec": len(train) / seconds, "time/epoch_sec": seconds})
        state.epoch += 1
        state.metrics = metrics
        state.rng = dist.all_gather_object(rng_state())  # so a resume gives each rank its own stream back
        for cb in callbacks:
            cb.on_epoch_end(state)
    for cb in callbacks:
        cb.on_train_end(state)
    state.final = evaluate(state.model, task, test, s.batch_size, "test", s.autocast_dtype)
    state.final.update(task.derived(state.final))
    for cb in callbacks:
        cb.on_fit_end(state)
    return state


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
