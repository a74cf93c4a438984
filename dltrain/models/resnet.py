"""CIFAR-style residual nets: a 3x3 stem, stages of basic or bottleneck blocks with identity shortcuts
(1x1-conv projections where the shape changes), batch norm, global average pooling. Default: ResNet-18."""
from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from torch import nn

from dltrain.core.registry import check
from dltrain.core.rules import NonEmpty, Positive
from dltrain.models import MODELS
from dltrain.models.layers import Activation, Init, check_init_options, init_weights
from dltrain.models.layers import activation as make_activation


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


class Block(nn.Module):
    """Basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion) residual block."""

    def __init__(self, c_in: int, width: int, stride: int, bottleneck: bool, act: nn.Module) -> None:
        super().__init__()
        c_out = width * 4 if bottleneck else width
        if bottleneck:
            layers = [*conv_bn(c_in, width, 1), act, *conv_bn(width, width, 3, stride), act, *conv_bn(width, c_out, 1)]
        else:
            layers = [*conv_bn(c_in, width, 3, stride), act, *conv_bn(width, c_out, 3)]
        self.body = nn.Sequential(*layers)
        projection = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(*conv_bn(c_in, c_out, 1, stride)) if projection else nn.Identity()
        self.act, self.c_out = act, c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def check_stages(**options: Any) -> None:
    """One width per stage; and the init scheme's arguments."""
    layers, widths = list(options["layers"]), list(options["widths"])
    check(len(layers) == len(widths), f"model.layers={layers} and model.widths={widths} must be of the same length "
          "(one entry per stage)")
    check_init_options(**options)


@MODELS.register("resnet", check=check_stages, channels_last=True)  # conv nets run faster in NHWC on GPUs
def build_resnet(*, in_shape: tuple[int, ...], num_outputs: int, block: Literal["basic", "bottleneck"] = "basic",
                 layers: Annotated[list[int], Positive, NonEmpty] = (2, 2, 2, 2),
                 widths: Annotated[list[int], Positive, NonEmpty] = (64, 128, 256, 512),
                 activation: Activation = "relu", slope: float = 0.01, init: Init = "default",
                 init_args: dict | None = None) -> nn.Module:
    """`layers[i]` blocks of width `widths[i]` (channels); every stage after the first halves the resolution."""
    check(len(in_shape) == 3, f"model=resnet needs image inputs (channels, height, width); the data gives {in_shape}")
    c = widths[0]
    modules: list[nn.Module] = [*conv_bn(in_shape[0], c, 3), make_activation(activation, slope)]
    for stage, (count, width) in enumerate(zip(layers, widths)):
        for i in range(count):
            blk = Block(c, width, 2 if stage > 0 and i == 0 else 1, block == "bottleneck",
                        make_activation(activation, slope))
            modules.append(blk)
            c = blk.c_out
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_outputs)]
    model = nn.Sequential(*modules)
    init_weights(model, init, init_args)
    return model
