"""Autoencoders: encoder -> bottleneck code -> decoder that rebuilds the input (task=reconstruction).

`mlp` works on any input shape (flattened); `conv` on images, with stride-2 convs down and transposed convs
up, cropped back to the input size. `num_outputs` is ignored: the output has the input's shape. For the
denoising variant set the top-level `denoise` noise level (the task corrupts the training inputs).
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import nn

from dltrain.core.registry import check
from dltrain.core.rules import NonEmpty, Positive
from dltrain.models import MODELS
from dltrain.models.layers import Activation, Init, check_init_options, init_weights, linear_stack
from dltrain.models.layers import activation as make_activation


class AutoEncoder(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder, self.decoder, self.in_shape = encoder, decoder, tuple(in_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder(x))
        if out.dim() == 4:  # transposed convs may overshoot odd sizes: crop to the input
            out = out[..., : self.in_shape[1], : self.in_shape[2]]
        return out.reshape(x.shape)


def conv_parts(in_shape: tuple[int, ...], channels: list[int], bottleneck: int, act: str,
               slope: float) -> tuple[list[nn.Module], list[nn.Module]]:
    c, h, w = in_shape
    down: list[nn.Module] = []
    sizes = [c, *channels]
    for a, b in zip(sizes[:-1], sizes[1:]):
        down += [nn.Conv2d(a, b, 3, 2, 1), make_activation(act, slope)]
        h, w = (h + 1) // 2, (w + 1) // 2
    flat = channels[-1] * h * w
    down += [nn.Flatten(), nn.Linear(flat, bottleneck)]
    up: list[nn.Module] = [nn.Linear(bottleneck, flat), make_activation(act, slope), nn.Unflatten(1, (channels[-1], h, w))]
    rev = [*reversed(channels), c]
    for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
        up.append(nn.ConvTranspose2d(a, b, 3, 2, 1, output_padding=1))
        if i < len(rev) - 2:
            up.append(make_activation(act, slope))
    return down, up


@MODELS.register("autoencoder", check=check_init_options)
def build_autoencoder(*, in_shape: tuple[int, ...], num_outputs: int, variant: Literal["mlp", "conv"] = "mlp",
                      hidden: Annotated[list[int], Positive] = (256, 64),
                      channels: Annotated[list[int], Positive, NonEmpty] = (16, 32),
                      bottleneck: Annotated[int, Positive] = 32, activation: Activation = "relu", slope: float = 0.01,
                      output: Literal["linear", "sigmoid"] = "linear", init: Init = "default",
                      init_args: dict | None = None) -> nn.Module:
    """`bottleneck` is the code size (units); `hidden` (mlp) and `channels` (conv) the widths of the encoder's layers;
    `output: sigmoid` squashes reconstructions into [0, 1]."""
    if variant == "conv":
        check(len(in_shape) == 3, f"model.variant=conv needs images (channels, height, width); the data gives {in_shape}")
        down, up = conv_parts(tuple(in_shape), list(channels), bottleneck, activation, slope)
        encoder, decoder = nn.Sequential(*down), nn.Sequential(*up)
    else:
        sizes = [math.prod(in_shape), *hidden, bottleneck]
        encoder = nn.Sequential(nn.Flatten(), *linear_stack(sizes, activation, slope))  # ends in the bare code
        decoder = nn.Sequential(*linear_stack(sizes[::-1], activation, slope))
    if output == "sigmoid":
        decoder.append(nn.Sigmoid())
    model = AutoEncoder(encoder, decoder, in_shape)
    init_weights(model, init, init_args)
    return model
