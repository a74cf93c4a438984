"""An exponential moving average (EMA) of the model's weights (`trainer.ema.decay`), as timm's ModelEmaV3 keeps it.

After optimizer step k (k = 1, 2, ...) every floating-point tensor of the model's state (parameters and buffers:
batch norm's running mean and variance are averaged with the weights, as timm does by default) moves towards the
trained one: ema = decay_k * ema + (1 - decay_k) * weights, with decay_k = min(decay, (1 + k) / (10 + k)) under
`warmup` (TensorFlow's ExponentialMovingAverage num_updates form: 0.18 after the first step, 0.9 after the 80th,
0.99 after the 890th, so the average soon forgets the random initial weights) and decay_k = decay without it.
Integer buffers (batch norm's num_batches_tracked) are copied. The average starts from the initial weights.

One `torch._foreach_lerp_` per step on the weights' device with a Python-float weight computed from the step count
the host already holds: no host sync, no per-tensor Python (torch.optim.swa_utils.AveragedModel reads its
`n_averaged` tensor every update, a host sync on a GPU). The averaged copy is a module of its own (`module`), in
eval mode and without gradients: validation, the best epoch, the test, and eval/export/predict use it.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def decay_at(step: int, decay: float, warmup: bool) -> float:
    """The decay of the update after optimizer step `step` (1-based)."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


class Ema:
    """The averaged weights of `model` (a plain module, already on its device and in its memory format)."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0  # optimizer steps averaged in (its own count: equals State.step in a run that had EMA)
        self.bind(model)

    def bind(self, model: nn.Module) -> None:
        """The lists of tensors to average (floating point) and to copy (integers), made once: the update then walks
        no modules and no Python per tensor. Parameters are held as themselves (a `.to()` swaps their data, not
        them); buffers are replaced by a `.to()`: bind again after moving the model."""
        ours, theirs = self.module.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
        first = {}  # a tensor tied under two names is averaged once, not twice
        keys = [first.setdefault(id(theirs[k]), k) for k in ours if id(theirs[k]) not in first]
        floats = [k for k in keys if ours[k].is_floating_point()]
        ints = [k for k in keys if not ours[k].is_floating_point()]
        self.ours, self.theirs = [ours[k] for k in floats], [theirs[k] for k in floats]
        self.ours_int, self.theirs_int = [ours[k] for k in ints], [theirs[k] for k in ints]

    @torch.no_grad()
    def update(self) -> None:
        """Average in the model's current weights: call once after each optimizer step."""
        self.updates += 1
        torch._foreach_lerp_(self.ours, self.theirs, 1.0 - decay_at(self.updates, self.decay, self.warmup))
        if self.ours_int:
            torch._foreach_copy_(self.ours_int, self.theirs_int)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds: the averaged weights (a model state dict) and the number of updates."""
        return {"weights": self.module.state_dict(), "updates": self.updates, "decay": self.decay,
                "warmup": self.warmup}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.module.load_state_dict(saved["weights"])  # in place: the bound pairs stay valid
        self.updates = int(saved["updates"])


def served(ema: Ema | None, model: nn.Module) -> nn.Module:
    """What is validated, judged and tested: the EMA's averaged copy when the run keeps one (trainer.ema), else
    `model` (the trained one: the engine's `state.model` to call, `state.raw_model` for its weights)."""
    return ema.module if ema is not None else model
