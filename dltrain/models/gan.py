"""A GAN: an MLP generator (latent z -> sample) and an MLP discriminator (sample -> one logit), trained by
the shared engine with task=adversarial.

forward(x) returns the discriminator's logits for the real batch, for detached fakes (the discriminator's
loss: no gradient reaches the generator) and for fakes through a frozen copy of the discriminator's weights
(the generator's loss: no gradient reaches the discriminator). So one backward pass of the summed losses
gives each network exactly its own gradient, and DDP sees one ordinary forward.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from dltrain.models import MODELS
from dltrain.models.layers import init_weights, linear_stack
from dltrain.optim import ParamGroup
from dltrain.registry import check


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


@MODELS.register("gan", generative=True)
def build_gan(*, in_shape: tuple[int, ...], num_outputs: int, latent_dim: int = 64, g_hidden: list[int] = (128, 256),
              d_hidden: list[int] = (256, 128), activation: str = "leaky_relu", slope: float = 0.2,
              d_dropout: float = 0.0, output: Literal["tanh", "linear"] = "linear", g_lr_scale: float = 1.0,
              d_lr_scale: float = 1.0, init: str = "default", init_args: dict | None = None) -> nn.Module:
    """`num_outputs` is ignored: the discriminator has one logit, the generator the data's sample shape."""
    check(latent_dim > 0, f"model.latent_dim={latent_dim} must be > 0")
    check(0.0 <= d_dropout < 1.0, f"model.d_dropout={d_dropout} must be in [0, 1)")
    check(g_lr_scale > 0 and d_lr_scale > 0, "model.g_lr_scale and model.d_lr_scale must be > 0")
    features = math.prod(in_shape)
    g_layers = linear_stack([latent_dim, *g_hidden, features], activation, slope)
    if output == "tanh":
        g_layers.append(nn.Tanh())
    generator = nn.Sequential(*g_layers, nn.Unflatten(1, tuple(in_shape)))
    discriminator = nn.Sequential(nn.Flatten(), *linear_stack([features, *d_hidden, 1], activation, slope, d_dropout))
    model = GAN(generator, discriminator, latent_dim, d_lr_scale, g_lr_scale)
    init_weights(model, init, init_args)
    return model
