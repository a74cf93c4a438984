"""Model families. Each file in this folder registers its builders with `@MODELS.register(name, **traits)`.

A builder is `build(*, in_shape: tuple[int, ...], num_outputs: int, **typed_config_kwargs) -> nn.Module`.
The run-time arguments (`MODELS.runtime`) come from the data, never from YAML: `in_shape` (one sample's
shape) and `num_outputs` for every builder, and `vocab_size` / `per_step` for the recurrent ones (token
inputs, language models), which take them as keyword arguments with defaults.

What the rest of the runner needs to know about a family is declared at registration as traits
(`ModelTraits`), not probed on the built module:
- `channels_last`: the net prefers the NHWC memory layout on CUDA (conv nets);
- `generative`: the model implements `Generative` (`sample` and `param_groups`) and trains with
  task=adversarial.
`param_groups(model, traits)` gives the optimizer groups of any model, each with its learning-rate scale.

Adding a model is a new file here plus a YAML in conf/model/: every module in this package is imported
automatically.
May import: dltrain.core and dltrain.models (not data, run, sweep, tools or cli).
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from dltrain.core.optim import ParamGroup
from dltrain.core.registry import Registry


@dataclass(frozen=True)
class ModelTraits:
    """What a model family declares at registration; every trait defaults to off."""

    channels_last: bool = False  # prefers the NHWC memory layout on CUDA (conv nets)
    # implements Generative: sample(n, generator) and param_groups(); trains with task=adversarial
    generative: bool = False


TRAIT_NAMES = tuple(f.name for f in fields(ModelTraits))


@runtime_checkable
class Generative(Protocol):
    """A model that draws samples and brings its own optimizer groups (a GAN's generator and discriminator)."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` new samples of the data's sample shape, (n, *in_shape)."""
        ...

    def param_groups(self) -> list[ParamGroup]:
        """Every parameter exactly once, split into groups with their own learning-rate scale."""
        ...


class ModelRegistry(Registry):
    """The model registry: its traits must be fields of ModelTraits, so a typo fails at import time."""

    def register(self, name: str, check: Callable[..., None] | None = None, inputs: Callable[..., None] | None = None,
                 **traits: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        unknown = sorted(set(traits) - set(TRAIT_NAMES))
        if unknown:
            raise TypeError(f"model '{name}': unknown trait(s) {', '.join(unknown)}; valid: {', '.join(TRAIT_NAMES)}")
        wrong = sorted(k for k, v in traits.items() if not isinstance(v, bool))
        if wrong:
            raise TypeError(f"model '{name}': trait(s) {', '.join(wrong)} must be True or False")
        return super().register(name, check, inputs, **traits)


MODELS = ModelRegistry("model", runtime=("in_shape", "num_outputs", "vocab_size", "per_step"))


def model_traits(name: str) -> ModelTraits:
    """The traits model family `name` declared at registration (ConfigError for an unknown name)."""
    return ModelTraits(**MODELS.traits(name))


def param_groups(model: nn.Module, traits: ModelTraits) -> list[ParamGroup]:
    """A generative model's own groups (each with its lr scale), else one group of all parameters."""
    if traits.generative:
        if not isinstance(model, Generative):
            raise TypeError(f"{type(model).__name__} is registered as generative but lacks sample()/param_groups()")
        return model.param_groups()
    return [ParamGroup(list(model.parameters()))]


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
