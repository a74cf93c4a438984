"""The typed groups of a run config (trainer, reg, data, task, early_stopping, trainer.ckpt): plain frozen
dataclasses, filled and checked by the door (config.py parses each group, door.py checks them across groups).
Each of those two modules imports these; neither imports the other's types (config.py -> door.py, one way).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from dltrain.core.registry import Spec
from dltrain.core.rules import Fraction


@dataclass(frozen=True)
class CheckpointConfig:
    save_last: bool = True  # last.pt after every epoch
    save_best: bool = True  # best.pt on improvement


@dataclass(frozen=True)
class TrainerConfig:
    """How to run: epochs, device, processes, precision (the trainer group; units in conf/trainer/*.yaml)."""

    max_epochs: int = 20
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = 1
    threads: int | None = None  # intra-op CPU threads per process; None = threads.py's rule (work per step, cores)
    precision: Literal["32", "bf16", "16", 32, 16] = "32"  # the command line turns 32 into an int
    compile: bool = False
    channels_last: Literal["auto", True, False] = "auto"
    seed: int = 0
    deterministic: bool = False
    log_every_n_steps: int = 50
    accumulate: int = 1  # batches whose summed gradients make one optimizer step (effective batch: batch_size * it)
    resume: str | None = None
    profile: int = 0  # training steps to profile after core/profiling.py's warm-up; 0 = off
    ckpt: dict = field(default_factory=dict)  # parsed into RunConfig.checkpoints
    init_from: str | None = None  # a run folder (its best.pt, else last.pt) or checkpoint to start from (init_from.py)
    init_mode: Literal["strict", "partial"] = "strict"  # strict: every tensor fits; partial: those that match
    freeze: list[str | int] = field(default_factory=list)  # parameter names/prefixes/fnmatch patterns kept fixed
    lr_scales: dict[str, float] | None = None  # pattern -> factor of the schedule's learning rate
    ema: dict = field(default_factory=dict)  # parsed into RunConfig.ema


@dataclass(frozen=True)
class EmaConfig:
    """trainer.ema: an exponential moving average of the weights (core/ema.py), validated, tested and served."""

    decay: Annotated[float | None, Fraction] = None  # share of the old average kept per optimizer step; None = off
    warmup: bool = True  # decay after step k: min(decay, (1 + k) / (10 + k)); false: decay from the first step


@dataclass(frozen=True)
class RegConfig:
    l1: float = 0.0  # lambda of the L1 penalty on weights
    l2: float = 0.0  # lambda of the L2 penalty on weights
    grad_clip: float | None = None  # global gradient-norm clip


@dataclass(frozen=True)
class DataConfig:
    spec: Spec  # the dataset builder and its keys
    batch_size: int  # global batch (samples per optimizer step, all processes together)
    augment: dict[str, Any] | None = None  # keyword arguments of data.augment.build_augment


@dataclass(frozen=True)
class TaskConfig:
    name: str | None  # None: the data's own task
    loss: str | None
    label_smoothing: float
    denoise: float


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """The early_stopping group feeds two classes; each key is defined once, by the class that uses it."""

    best: dict[str, Any]  # keyword arguments of engine.Best: monitor, mode, min_delta, start_from_epoch, restore_best
    stopping: dict[str, Any]  # keyword arguments of callbacks.EarlyStopping: enabled, patience, baseline, ...
