"""Multi-layer perceptron: flatten -> [Linear -> BatchNorm? -> activation -> Dropout?] x N -> Linear."""
from __future__ import annotations

import math

from torch import nn

from dltrain.models import MODELS
from dltrain.models.layers import init_weights, linear_stack
from dltrain.registry import check


@MODELS.register("mlp")
def build_mlp(*, in_shape: tuple[int, ...], num_outputs: int, hidden: list[int], activation: str = "relu",
              slope: float = 0.01, dropout: float = 0.0, batch_norm: bool = False, init: str = "default",
              init_args: dict | None = None) -> nn.Module:
    """`hidden` are the widths of the hidden layers; the output layer has `num_outputs` units (logits)."""
    check(len(hidden) > 0, "model.hidden must list at least one layer width, e.g. [128, 64]")
    check(all(h > 0 for h in hidden), f"model.hidden widths must be positive, got {hidden}")
    check(0.0 <= dropout < 1.0, f"model.dropout={dropout} must be in [0, 1)")
    sizes = [math.prod(in_shape), *hidden, num_outputs]
    model = nn.Sequential(nn.Flatten(), *linear_stack(sizes, activation, slope, dropout, batch_norm))
    init_weights(model, init, init_args)
    return model
