"""Tasks: what one batch's loss and metrics are. The engine's loop is the same for every task.

A task's `step(model, x, y)` returns the batch's *summed* loss (the engine divides by the global batch size,
which keeps DDP exact) and a dict of per-batch metric sums; every metric is reported as sum / samples.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dltrain.registry import ConfigError, Registry, check

TASKS = Registry("task")


class Task(Protocol):
    metric_names: tuple[str, ...]  # what step() sums besides the loss, e.g. ("acc",)

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ...


class Classification:
    """Logits (N, C) against class indices (N,): cross entropy (optionally smoothed) and accuracy."""

    metric_names = ("acc",)

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=self.label_smoothing)
        correct = (logits.argmax(dim=1) == y).sum()
        return loss, {"loss": loss.detach(), "acc": correct}


@TASKS.register("classification")
def classification(*, loss: str | None = None, label_smoothing: float = 0.0) -> Task:
    check(loss in (None, "cross_entropy"), f"loss={loss} does not fit task=classification; valid: cross_entropy")
    check(0.0 <= label_smoothing < 1.0, f"label_smoothing={label_smoothing} must be in [0, 1)")
    return Classification(label_smoothing)


def build_task(name: str, loss: str | None, label_smoothing: float) -> Task:
    try:
        builder: Callable[..., Task] = TASKS.get(name)
    except ConfigError:
        raise ConfigError(f"unknown task '{name}'; valid: {', '.join(TASKS.names())}") from None
    return builder(loss=loss, label_smoothing=label_smoothing)
