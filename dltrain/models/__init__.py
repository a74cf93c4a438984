"""Model families. Each file in this folder registers its builders with `@MODELS.register(name)`.

A builder is `build(*, in_shape: tuple[int, ...], num_outputs: int, **typed_config_kwargs) -> nn.Module`;
`in_shape` (one sample's shape) and `num_outputs` come from the data at run time. Adding a model is a new
file here plus a YAML in conf/model/: every module in this package is imported automatically.
"""
from __future__ import annotations

import importlib
import pkgutil

from dltrain.registry import Registry

MODELS = Registry("model")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
