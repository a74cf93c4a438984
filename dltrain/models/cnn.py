"""Convolutional net: [conv -> BatchNorm? -> activation, a pool after every `pool_every` blocks] x N, dropout,
then a fully connected head.

The default is LeNet-5-like: 6 and 16 channels, 5x5 kernels (padded so 8x8 digits fit), head 120-84. PyTorch's
MNIST example net is two 3x3 convs (32, 64), one pool, dropout 0.25, head 128 with dropout 0.5
(experiments/mnist_pytorch_example.yaml).
"""
from __future__ import annotations

from typing import Annotated, Literal

from torch import nn

from dltrain.core.registry import check
from dltrain.core.rules import Fraction, NonEmpty, NonNegative, Positive
from dltrain.models import MODELS
from dltrain.models.layers import Activation, Init, check_init_options, init_weights, linear_stack
from dltrain.models.layers import activation as make_activation


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@MODELS.register("cnn", check=check_init_options, channels_last=True)  # conv nets run faster in NHWC on GPUs
def build_cnn(*, in_shape: tuple[int, ...], num_outputs: int, channels: Annotated[list[int], Positive, NonEmpty],
              kernel_size: Annotated[int, Positive] = 5, stride: Annotated[int, Positive] = 1,
              padding: Annotated[int, NonNegative] = 2, pool: Literal["max", "avg", "none"] = "max",
              pool_size: Annotated[int, Positive] = 2, pool_every: Annotated[int, Positive] = 1,
              conv_dropout: Annotated[float, Fraction] = 0.0, head: Annotated[list[int], Positive] | None = None,
              activation: Activation = "relu", slope: float = 0.01, dropout: Annotated[float, Fraction] = 0.0,
              batch_norm: bool = False, init: Init = "default", init_args: dict | None = None) -> nn.Module:
    """Conv blocks with `channels[i]` output channels each (kernel_size, stride, padding and pool_size in pixels), a
    pool after every `pool_every`-th block (and after the last); `conv_dropout` after the conv stack; `head` lists the
    hidden widths of the head."""
    check(len(in_shape) == 3, f"model=cnn needs image inputs (channels, height, width); the data gives {in_shape}")
    layers: list[nn.Module] = []
    c, h, w = in_shape
    for i, out in enumerate(channels):
        layers.append(nn.Conv2d(c, out, kernel_size, stride, padding, bias=not batch_norm))
        h, w = _conv_out(h, kernel_size, stride, padding), _conv_out(w, kernel_size, stride, padding)
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(make_activation(activation, slope))
        if pool != "none" and ((i + 1) % pool_every == 0 or i + 1 == len(channels)):
            layers.append(nn.MaxPool2d(pool_size) if pool == "max" else nn.AvgPool2d(pool_size))
            h, w = h // pool_size, w // pool_size
        check(h > 0 and w > 0, f"model=cnn: a {in_shape[1]}x{in_shape[2]} input shrinks to nothing after conv block "
              f"{i + 1}; use fewer blocks, a smaller kernel_size/pool_size or more padding")
        c = out
    sizes = [c * h * w, *(head if head is not None else [120, 84]), num_outputs]
    if conv_dropout > 0:
        layers.append(nn.Dropout(conv_dropout))
    model = nn.Sequential(*layers, nn.Flatten(), *linear_stack(sizes, activation, slope, dropout))
    init_weights(model, init, init_args)
    return model
