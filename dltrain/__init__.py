"""dltrain: a config-driven deep-learning experiment runner (Hydra configs, one engine, TensorBoard).

The public API for a user's own components (see docs/extending.md): the `register_*` decorators below, and the
contract types `DataBundle`, `Split`, `Callback`, `State`, `ParamGroup`, `Generative`. Importing `dltrain`
itself imports no torch (the CLI's --help stays fast); the names load on first use.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"

_LAZY = {"DataBundle": "dltrain.data", "Split": "dltrain.data", "Callback": "dltrain.engine",
         "State": "dltrain.engine", "ParamGroup": "dltrain.optim", "Generative": "dltrain.models",
         "ConfigError": "dltrain.registry", "check": "dltrain.registry"}


def register_model(name: str, *, channels_last: bool = False, generative: bool = False,
                   check: Callable[..., None] | None = None) -> Callable[[Any], Any]:
    """`@register_model("mynet")` on `build(*, in_shape, num_outputs, **your_yaml_keys) -> nn.Module`. Value rules sit
    in the keys' types (`width: Annotated[int, Positive]`, dltrain.rules); `check(**options)` checks several at once."""
    from dltrain.models import MODELS

    return MODELS.register(name, check, channels_last=channels_last, generative=generative)


def register_data(name: str, *, task: str | Callable[..., str | None] | None = None,
                  check: Callable[..., None] | None = None,
                  inputs: Callable[..., None] | None = None) -> Callable[[Any], Any]:
    """`@register_data("mydata")` on `build(*, seed, **your_yaml_keys) -> DataBundle`. `task` names the task its
    bundles train on (so the door checks the monitored metric), or computes it from the options (None: the data
    tells); `check(**options)` is a rule over several options, `inputs(**options)` checks the files it will read."""
    from dltrain.data import DATASETS

    return DATASETS.register(name, check, inputs, **({"task": task} if task is not None else {}))


def register_task(name: str) -> Callable[[Any], Any]:
    """`@register_task("mytask")` on `build(*, loss, label_smoothing, denoise) -> Task` (see dltrain/tasks.py)."""
    from dltrain.tasks import TASKS

    return TASKS.register(name)


def register_callback(name: str) -> Callable[[Any], Any]:
    """`@register_callback("mylogger")` on a `Callback` subclass whose __init__ takes its YAML options."""
    from dltrain.callbacks import CALLBACKS

    return CALLBACKS.register(name)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dltrain' has no attribute {name!r}")
