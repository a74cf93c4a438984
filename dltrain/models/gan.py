"""A GAN: an MLP generator (latent z -> sample) and an MLP discriminator (sample -> one logit), trained by
the shared engine with task=adversarial.

forward(x) returns the discriminator's logits for the real batch, for detached fakes (the discriminator's
loss: no gradient reaches the generator) and for fakes through a frozen copy of the discriminator's weights
(the generator's loss: no gradient reaches the discriminator). So one backward pass of the summed losses
gives each network exactly its own gradient, and DDP sees one ordinary forward.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import nn
from torch.func import functional_call

from dltrain.core.optim import ParamGroup
from dltrain.core.rules import Fraction, Positive
from dltrain.models import MODELS
from dltrain.models.layers import Activation, Init, check_init_options, init_weights, linear_stack


class GAN(nn.Module):
    """Implements models.Generative: `sample` and `param_groups`."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int, d_lr_scale: float,
                 g_lr_scale: float) -> None:
        super().__init__()
        self.generator, self.discriminator, self.latent_dim = generator, discriminator, latent_dim
        self.g_lr_scale, self.d_lr_scale = g_lr_scale, d_lr_scale  # multiples of optim.lr

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        return self.generator(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fake = self.sample(len(x)).reshape(x.shape)
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        return (self.discriminator(x), self.discriminator(fake.detach()),
                functional_call(self.discriminator, frozen, (fake,)))

    def param_groups(self) -> list[ParamGroup]:
        """The two networks as optimizer groups, generator first, each with its own learning-rate scale."""
        return [ParamGroup(list(self.generator.parameters()), self.g_lr_scale),
                ParamGroup(list(self.discriminator.parameters()), self.d_lr_scale)]


@MODELS.register("gan", check=check_init_options, generative=True)
def build_gan(*, in_shape: tuple[int, ...], num_outputs: int, latent_dim: Annotated[int, Positive] = 64,
              g_hidden: Annotated[list[int], Positive] = (128, 256),
              d_hidden: Annotated[list[int], Positive] = (256, 128),
              activation: Activation = "leaky_relu", slope: float = 0.2, d_dropout: Annotated[float, Fraction] = 0.0,
              output: Literal["tanh", "linear"] = "linear", g_lr_scale: Annotated[float, Positive] = 1.0,
              d_lr_scale: Annotated[float, Positive] = 1.0, init: Init = "default",
              init_args: dict | None = None) -> nn.Module:
    """`num_outputs` is ignored: the discriminator has one logit, the generator the data's sample shape. `latent_dim`
    and the hidden widths are in units; `g_lr_scale`/`d_lr_scale` multiply optim.lr for each network."""
    features = math.prod(in_shape)
    g_layers = linear_stack([latent_dim, *g_hidden, features], activation, slope)
    if output == "tanh":
        g_layers.append(nn.Tanh())
    generator = nn.Sequential(*g_layers, nn.Unflatten(1, tuple(in_shape)))
    discriminator = nn.Sequential(nn.Flatten(), *linear_stack([features, *d_hidden, 1], activation, slope, d_dropout))
    model = GAN(generator, discriminator, latent_dim, d_lr_scale, g_lr_scale)
    init_weights(model, init, init_args)
    return model
