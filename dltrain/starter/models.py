"""Your model: a plain torch module, registered under the name your YAML (conf/model/mynet.yaml) chooses.

dltrain calls the builder with the data's sample shape (`in_shape`) and number of outputs (`num_outputs`),
plus every key of the YAML except `name` (here `width` and `dropout`). Edit anything here: the next run uses it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dltrain import register_model

HIDDEN_LAYERS = 2  # how many width-sized hidden layers


class MyNet(nn.Module):
    def __init__(self, in_features: int, num_outputs: int, width: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(HIDDEN_LAYERS):
            layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU(), nn.Dropout(dropout)]
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # logits


@register_model("mynet")
def build_mynet(*, in_shape: tuple[int, ...], num_outputs: int, width: int = 32, dropout: float = 0.0) -> nn.Module:
    return MyNet(math.prod(in_shape), num_outputs, width, dropout)
