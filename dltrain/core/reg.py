"""Explicit weight penalties added to the loss: L1 = l1 * sum|w|, L2 = l2 / 2 * sum w^2.

Only weights count: parameters with two or more dimensions (linear, conv, embedding, recurrent matrices);
biases and normalization parameters are one-dimensional and excluded.
"""
from __future__ import annotations

import torch
from torch import nn


def penalized_weights(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.dim() >= 2 and p.requires_grad]


def penalty(weights: list[torch.Tensor], l1: float, l2: float) -> torch.Tensor | float:
    """The explicit penalty term; 0.0 (a float, no kernels launched) when both lambdas are zero."""
    total: torch.Tensor | float = 0.0
    if l1 > 0:
        total = total + l1 * sum(w.abs().sum() for w in weights)
    if l2 > 0:
        total = total + 0.5 * l2 * sum(w.pow(2).sum() for w in weights)
    return total
