"""Tasks: what one batch's loss and metrics are. The engine's loop is the same for every task.

A task's `step(model, x, y)` returns the batch's loss *summed over samples* (the engine divides by the global
batch size, which keeps DDP exact) and one float32 vector of per-batch sums in the order ("loss",
*metric_names); the engine adds it up with one kernel and reports each as sum / samples, then `derived()`
may add metrics that are not averages (perplexity).

Each task declares which way each of its metrics is better (`directions`, e.g. {"acc": "max"}); the loss is
lower-better for every task (the engine minimises it). early_stopping.mode=auto (the default) takes the
monitored metric's direction from there (`monitor_mode`). A user's task may declare none.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dltrain.core.registry import ConfigError, Registry, check

TASKS = Registry("task")
Direction = Literal["min", "max"]  # lower is better | higher is better
REGRESSION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss, "huber": F.huber_loss}


class Task(Protocol):
    metric_names: tuple[str, ...]  # what step() sums besides the loss, e.g. ("acc",)
    derived_names: tuple[str, ...]  # what derived() adds from the means, e.g. ("ppl",)
    directions: dict[str, Direction]  # optional: which way each metric is better, e.g. {"acc": "max"}

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss summed over the batch's samples, float32 sums of ("loss", *metric_names))."""
        ...
    def derived(self, means: dict[str, float]) -> dict[str, float]: ...


class Classification:
    """Logits (N, C) against class indices (N,): cross entropy (optionally smoothed) and accuracy.
    With loss=bce the model has one output: a logit for class 1 against 0/1 targets."""

    def __init__(self, loss: str = "cross_entropy", label_smoothing: float = 0.0) -> None:
        self.loss, self.label_smoothing = loss, label_smoothing
        self.metric_names, self.derived_names = ("acc",), ()
        self.directions: dict[str, Direction] = {"acc": "max"}

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x).float()
        if self.loss == "bce":
            logits = logits.reshape(-1)
            loss = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="sum")
            correct = ((logits > 0).long() == y).sum(dtype=torch.float32)
        else:
            loss = F.cross_entropy(logits, y, reduction="sum", label_smoothing=self.label_smoothing)
            correct = (logits.argmax(dim=1) == y).sum(dtype=torch.float32)
        return loss, torch.stack([loss.detach(), correct])

    def derived(self, means: dict[str, float]) -> dict[str, float]:
        return {}


class Regression:
    """Outputs against float targets of the same shape; reports MSE and MAE whatever the loss."""

    def __init__(self, loss: str = "mse") -> None:
        self.loss_fn = REGRESSION_LOSSES[loss]
        self.metric_names, self.derived_names = ("mse", "mae"), ()
        self.directions: dict[str, Direction] = {"mse": "min", "mae": "min"}

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(x).float().reshape(y.shape)
        per_sample = max(y[0].numel(), 1) if len(y) else 1  # average over target dims, sum over samples
        loss = self.loss_fn(out, y, reduction="sum") / per_sample
        err = (out - y).detach()
        return loss, torch.stack([loss.detach(), err.pow(2).sum() / per_sample, err.abs().sum() / per_sample])

    def derived(self, means: dict[str, float]) -> dict[str, float]:
        return {}


class Reconstruction:
    """The model rebuilds its input (targets are ignored). `denoise` > 0 trains a denoising autoencoder:
    Gaussian noise of that std is added to the training input only; the target stays clean."""

    def __init__(self, loss: str = "mse", denoise: float = 0.0) -> None:
        self.loss, self.denoise = loss, denoise
        self.metric_names, self.derived_names = ("mse",), ()
        self.directions: dict[str, Direction] = {"mse": "min"}

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noisy = x + self.denoise * torch.randn_like(x) if self.denoise > 0 and model.training else x
        out = model(noisy).float()
        per_sample = max(x[0].numel(), 1) if len(x) else 1
        if self.loss == "bce":  # targets in [0, 1], outputs are logits
            loss = F.binary_cross_entropy_with_logits(out, x.float(), reduction="sum") / per_sample
            mse = (torch.sigmoid(out) - x).pow(2).sum() / per_sample
        else:
            loss = F.mse_loss(out, x.float(), reduction="sum") / per_sample
            mse = loss
        return loss, torch.stack([loss.detach(), mse.detach()])

    def derived(self, means: dict[str, float]) -> dict[str, float]:
        return {}


class LanguageModel:
    """Next-token prediction: logits (N, T, V) against tokens (N, T). Loss and accuracy per token;
    perplexity = exp(loss)."""

    def __init__(self) -> None:
        self.metric_names, self.derived_names = ("acc",), ("ppl",)
        self.directions: dict[str, Direction] = {"acc": "max", "ppl": "min"}

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x).float()
        tokens = y.shape[1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum") / tokens
        correct = (logits.argmax(dim=-1) == y).sum() / tokens
        return loss, torch.stack([loss.detach(), correct])

    def derived(self, means: dict[str, float]) -> dict[str, float]:
        return {k.replace("/loss", "/ppl"): math.exp(min(v, 50.0)) for k, v in means.items() if k.endswith("/loss")}


class Adversarial:
    """GAN training in one step of the shared loop. The model's forward(x) returns discriminator logits for
    real samples, for detached fakes (the discriminator's loss) and for fakes through a frozen copy of the
    discriminator's weights (the generator's loss). The sum of both losses then gives each network exactly
    its own gradient; generator and discriminator are separate parameter groups with their own lr/betas."""

    def __init__(self) -> None:
        self.metric_names, self.derived_names = ("d_loss", "g_loss"), ()
        self.directions: dict[str, Direction] = {"d_loss": "min", "g_loss": "min"}  # what each network minimises

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real, fake_for_d, fake_for_g = (t.float().reshape(-1) for t in model(x))
        bce = F.binary_cross_entropy_with_logits
        d_loss = bce(real, torch.ones_like(real), reduction="sum") + bce(fake_for_d, torch.zeros_like(fake_for_d),
                                                                         reduction="sum")
        g_loss = bce(fake_for_g, torch.ones_like(fake_for_g), reduction="sum")  # non-saturating loss
        loss = d_loss + g_loss
        return loss, torch.stack([loss.detach(), d_loss.detach(), g_loss.detach()])

    def derived(self, means: dict[str, float]) -> dict[str, float]:
        return {}


@TASKS.register("classification")
def classification(*, loss: str | None = None, label_smoothing: float = 0.0, denoise: float = 0.0) -> Task:
    check(loss in (None, "cross_entropy", "bce"), f"loss={loss} does not fit task=classification; "
          "valid: cross_entropy, bce (binary, one output)")
    check(0.0 <= label_smoothing < 1.0, f"label_smoothing={label_smoothing} must be in [0, 1)")
    return Classification(loss or "cross_entropy", label_smoothing)


@TASKS.register("regression")
def regression(*, loss: str | None = None, label_smoothing: float = 0.0, denoise: float = 0.0) -> Task:
    check(loss is None or loss in REGRESSION_LOSSES,
          f"loss={loss} does not fit task=regression; valid: {', '.join(REGRESSION_LOSSES)}")
    return Regression(loss or "mse")


@TASKS.register("reconstruction")
def reconstruction(*, loss: str | None = None, label_smoothing: float = 0.0, denoise: float = 0.0) -> Task:
    check(loss in (None, "mse", "bce"), f"loss={loss} does not fit task=reconstruction; valid: mse, bce")
    check(denoise >= 0, f"denoise={denoise} must be >= 0 (std of the denoising input noise)")
    return Reconstruction(loss or "mse", denoise)


@TASKS.register("language_model")
def language_model(*, loss: str | None = None, label_smoothing: float = 0.0, denoise: float = 0.0) -> Task:
    check(loss in (None, "cross_entropy"), f"loss={loss} does not fit task=language_model; valid: cross_entropy")
    return LanguageModel()


@TASKS.register("adversarial")
def adversarial(*, loss: str | None = None, label_smoothing: float = 0.0, denoise: float = 0.0) -> Task:
    check(loss in (None, "bce"), f"loss={loss} does not fit task=adversarial; valid: bce")
    return Adversarial()


def build_task(name: str, *, loss: str | None = None, label_smoothing: float = 0.0, denoise: float = 0.0) -> Task:
    """The task `name` with the top-level loss options; an option that the task ignores is an error."""
    try:
        builder: Callable[..., Task] = TASKS.get(name)
    except ConfigError:
        raise ConfigError(f"unknown task '{name}'; valid: {', '.join(TASKS.names())}") from None
    check(label_smoothing == 0 or name == "classification", f"label_smoothing={label_smoothing} applies to "
          f"task=classification only, not task={name}; leave it at 0.0")
    check(denoise == 0 or name == "reconstruction", f"denoise={denoise} applies to task=reconstruction only, "
          f"not task={name}; leave it at 0.0")
    return builder(loss=loss, label_smoothing=label_smoothing, denoise=denoise)


def metric_direction(task: Task | None, metric: str) -> Direction | None:
    """Which way `metric` (e.g. val/acc) is better for `task`: the loss is lower-better for every task; other
    metrics as the task declares them (None: the task does not say)."""
    name = metric.split("/", 1)[-1]
    if name == "loss":
        return "min"
    direction = (getattr(task, "directions", None) or {}).get(name)
    return direction if direction in ("min", "max") else None


def monitor_mode(mode: str, monitor: str, task: Task | None, task_name: str) -> tuple[Direction, str | None]:
    """early_stopping.mode resolved for `monitor`, and a warning line or None: auto takes the task's direction
    (refused in one line when the task declares none); an explicit min/max is kept, with a warning when it
    contradicts the task's direction."""
    direction = metric_direction(task, monitor)
    check(mode in ("auto", "min", "max"), f"early_stopping.mode={mode!r} is not a choice; valid: auto, min, max")
    if mode == "auto":
        check(direction is not None, f"early_stopping.mode=auto cannot tell whether a higher {monitor} is better: "
              f"task={task_name} does not declare its direction; set early_stopping.mode=min or "
              "early_stopping.mode=max")
        return direction or "min", None
    explicit: Direction = "max" if mode == "max" else "min"
    if direction is None or direction == explicit:
        return explicit, None
    kept, better = ("lowest", "higher") if explicit == "min" else ("highest", "lower")
    return explicit, (f"early_stopping.mode={explicit} keeps the epoch with the {kept} {monitor}, but a {better} "
                      f"{monitor} is better for task={task_name}; use early_stopping.mode={direction} (or auto)")
