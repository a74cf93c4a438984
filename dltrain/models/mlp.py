"""Multi-layer perceptron: flatten -> [Linear -> BatchNorm? -> activation -> Dropout?] x N -> Linear."""
from __future__ import annotations

import math
from typing import Annotated

from torch import nn

from dltrain.core.rules import Fraction, NonEmpty, Positive
from dltrain.models import MODELS
from dltrain.models.layers import Activation, Init, check_init_options, init_weights, linear_stack


@MODELS.register("mlp", check=check_init_options)
def build_mlp(*, in_shape: tuple[int, ...], num_outputs: int, hidden: Annotated[list[int], Positive, NonEmpty],
              activation: Activation = "relu", slope: float = 0.01, dropout: Annotated[float, Fraction] = 0.0,
              batch_norm: bool = False, init: Init = "default", init_args: dict | None = None) -> nn.Module:
    """`hidden` are the widths of the hidden layers; the output layer has `num_outputs` units (logits)."""
    sizes = [math.prod(in_shape), *hidden, num_outputs]
    model = nn.Sequential(nn.Flatten(), *linear_stack(sizes, activation, slope, dropout, batch_norm))
    init_weights(model, init, init_args)
    return model
