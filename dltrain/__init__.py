"""dltrain: a config-driven deep-learning experiment runner (Hydra configs, one engine, TensorBoard).

The public API for a user's own components (see docs/extending.md): the `register_*` decorators below, and the
contract types `DataBundle`, `Split`, `Callback`, `State`, `ParamGroup`, `Generative`. Importing `dltrain`
itself imports no torch (the CLI's --help stays fast); the names load on first use.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from dltrain.core import VERSION as __version__  # one constant (core/__init__.py imports nothing)

_LAZY = {"DataBundle": "dltrain.data", "Split": "dltrain.data", "Callback": "dltrain.core.engine",
         "State": "dltrain.core.engine", "ParamGroup": "dltrain.core.optim", "Generative": "dltrain.models",
         "ConfigError": "dltrain.core.registry", "check": "dltrain.core.registry"}

# Module paths from before the wings (core/, run/, ...) that user projects import: each is the same module object
# as its new home (not a copy), so `dltrain.dist.is_main` and `dltrain.core.dist.is_main` are one function.
MOVED = {"dltrain.dist": "dltrain.core.dist", "dltrain.rules": "dltrain.core.rules",
         "dltrain.callbacks": "dltrain.core.callbacks", "dltrain.engine": "dltrain.core.engine",
         "dltrain.tasks": "dltrain.core.tasks", "dltrain.optim": "dltrain.core.optim",
         "dltrain.sched": "dltrain.core.sched", "dltrain.registry": "dltrain.core.registry",
         "dltrain.plugins": "dltrain.run.plugins", "dltrain.preprocess": "dltrain.tools.preprocess"}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path (MOVED) as the module at its new home; Python's own import does the rest."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: Any) -> None:
        """The module ran at its new home already."""


sys.meta_path.append(_MovedFinder())


def register_model(name: str, *, channels_last: bool = False, generative: bool = False,
                   check: Callable[..., None] | None = None) -> Callable[[Any], Any]:
    """`@register_model("mynet")` on `build(*, in_shape, num_outputs, **your_yaml_keys) -> nn.Module`. Value rules sit
    in the keys' types (`width: Annotated[int, Positive]`, dltrain.core.rules); `check(**options)` checks several at once."""
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
    """`@register_task("mytask")` on `build(*, loss, label_smoothing, denoise) -> Task` (see dltrain/core/tasks.py)."""
    from dltrain.core.tasks import TASKS

    return TASKS.register(name)


def register_callback(name: str) -> Callable[[Any], Any]:
    """`@register_callback("mylogger")` on a `Callback` subclass whose __init__ takes its YAML options."""
    from dltrain.core.callbacks import CALLBACKS

    return CALLBACKS.register(name)


def register_optimizer(name: str) -> Callable[[Any], Any]:
    """`@register_optimizer("lion")` on `build(*, params, **your_yaml_keys) -> torch.optim.Optimizer`; the options
    come from conf/optim/lion.yaml (typed keyword arguments, checked as the built-ins' are: unknown keys, types,
    `Annotated` rules, lr and weight_decay >= 0, and your builder's own ValueErrors, built once on a dummy
    parameter). `params` is a list of torch param-group dicts: pass it to `torch.optim.Optimizer.__init__` with
    `lr` in its defaults, and read each group's "lr" when stepping (the schedule sets it, times the group's lr_scale).
    `exclude_bias_and_norm` is an option of every optimizer (it arrives as a group with weight_decay 0)."""
    from dltrain.core.optim import register_optimizer as register

    return register(name)


def register_schedule(name: str) -> Callable[[Any], Any]:
    """`@register_schedule("rsqrt")` on `build(*, lr0, total, **your_yaml_keys) -> lr_at` with `lr_at(t) -> float`, a
    pure function of t (epochs or optimizer steps done after the warm-up, as the YAML's `interval` says); `lr0` is
    optim.lr, `total` the number of t units after the warm-up. Raise dltrain.ConfigError on bad values."""
    from dltrain.core.sched import register_schedule as register

    return register(name)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dltrain' has no attribute {name!r}")
