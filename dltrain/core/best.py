"""Best: the monitored metric and its best epoch so far, judged by the engine after each epoch (engine.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from dltrain.core.tasks import metric_direction


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
