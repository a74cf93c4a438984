"""Shared building blocks of the model families: activations, Linear stacks and weight initialization by name."""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Annotated, Any

import torch
from torch import nn

from dltrain.core.registry import ConfigError, check, first_line
from dltrain.core.rules import Check

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "gelu", "elu", "identity")
# init scheme -> torch.nn.init function; its own keyword names (mean/std, a/b, val, ...) are init_args.
INITS = {
    "normal": nn.init.normal_,
    "uniform": nn.init.uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "kaiming_normal": nn.init.kaiming_normal_,
    "kaiming_uniform": nn.init.kaiming_uniform_,
    "zeros": nn.init.zeros_,
    "ones": nn.init.ones_,
    "constant": nn.init.constant_,
}

Activation = Annotated[str, Check(lambda name: name in ACTIVATIONS,
                                  f"is not an activation; valid: {', '.join(ACTIVATIONS)}")]
Init = Annotated[str, Check(lambda name: name == "default" or name in INITS,
                            f"is not an init scheme; valid: default, {', '.join(INITS)}")]


def check_init_options(**options: Any) -> None:
    """The registration `check` of every model family: init_args must be arguments of the chosen init, with values
    it takes (tried on a small weight at the door, not found first when the model is built)."""
    scheme, init_args = options["init"], options.get("init_args")
    check_init(scheme, init_args)
    if scheme != "default" and init_args:
        try:
            INITS[scheme](torch.empty(4, 4), **init_args)
        except (TypeError, ValueError, RuntimeError) as err:  # torch's own range checks raise RuntimeError
            raise ConfigError(f"model.init_args={init_args} do not fit init={scheme}: {first_line(err)}") from None


def activation(name: str, slope: float = 0.01) -> nn.Module:
    """A fresh activation module; `slope` is leaky_relu's negative slope."""
    makers = {
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU,
        "leaky_relu": lambda: nn.LeakyReLU(slope), "identity": nn.Identity,
    }
    check(name in makers, f"unknown activation '{name}'; valid: {', '.join(ACTIVATIONS)}")
    return makers[name]()


def linear_stack(sizes: Sequence[int], act: str, slope: float = 0.01, dropout: float = 0.0,
                 batch_norm: bool = False) -> list[nn.Module]:
    """Linear layers sizes[0] -> sizes[1] -> ... -> sizes[-1] (widths in units).

    Every hidden Linear is followed by [BatchNorm1d?] -> activation(act, slope) -> [Dropout(dropout)?]; the last
    Linear is bare (logits, a code, a sample) and always has a bias. With `batch_norm` the hidden Linears have
    no bias: BN's shift replaces it. The one MLP body of mlp, the GAN's two networks, the mlp autoencoder and
    the cnn head.
    """
    if len(sizes) < 2:
        raise ValueError(f"linear_stack needs an input and an output width, got {list(sizes)}")
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(nn.Linear(width_in, width_out, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width_out))
        layers.append(activation(act, slope))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return [*layers, nn.Linear(sizes[-2], sizes[-1])]


def check_init(scheme: str, init_args: dict | None = None) -> None:
    """Fail early, with the valid names, on an unknown scheme or argument."""
    check(scheme == "default" or scheme in INITS,
          f"unknown init '{scheme}'; valid: default, {', '.join(INITS)}")
    if scheme != "default" and init_args:
        params = [p for p in list(inspect.signature(INITS[scheme]).parameters)[1:] if p != "generator"]
        for key in init_args:
            check(key in params, f"init_args.{key} is not an argument of init={scheme}; valid: {', '.join(params)}")


def init_weights(model: nn.Module, scheme: str = "default", init_args: dict | None = None) -> None:
    """Initialize the weights of linear/conv/recurrent/embedding layers with `scheme`; biases start at zero.

    `default` keeps PyTorch's own initialization (biases included). Only weights with two or more dimensions
    are set (the rule dltrain/reg.py uses too): norm layers (BatchNorm, InstanceNorm, LayerNorm, GroupNorm, ...)
    have 1-D scales, so they keep weight 1, and their zero shift stays 0.
    """
    check_init(scheme, init_args)
    if scheme == "default":
        return
    fn, kwargs = INITS[scheme], dict(init_args or {})
    for module in model.modules():
        for pname, param in module.named_parameters(recurse=False):
            if pname.startswith("bias"):
                nn.init.zeros_(param)
            elif pname.startswith("weight") and param.dim() >= 2:
                try:
                    fn(param, **kwargs)
                except (TypeError, ValueError, RuntimeError) as err:  # torch's own range checks raise RuntimeError
                    raise ConfigError(f"init={scheme} failed on {type(module).__name__}.{pname}: "
                                      f"{first_line(err)}") from None
