"""Where the configs live, and the checks of the groups that have no builder (trainer, reg, early_stopping).

Model, data, optim and sched nodes are checked against their builders' signatures by the registries; the
typed dataclasses below play that role for the rest. Every problem is a one-line ConfigError raised before
any training starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dltrain.registry import ConfigError, check, check_kwargs


def config_dir() -> Path:
    """conf/ inside an installed wheel (dltrain/conf), else the source checkout's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"dltrain's conf/ folder is missing next to {here}; reinstall the package")


def groups() -> dict[str, list[str]]:
    """Config groups and their choices, read from the YAML files (no torch import)."""
    root = config_dir()
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(root.iterdir()) if d.is_dir()}


@dataclass
class Ckpt:
    save_last: bool = True  # last.pt after every epoch
    save_best: bool = True  # best.pt on improvement


@dataclass
class Trainer:
    max_epochs: int = 20
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = 1
    precision: Literal["32", "bf16", "16", 32, 16] = "32"  # the command line turns 32 into an int
    compile: bool = False
    channels_last: Literal["auto", True, False] = "auto"
    seed: int = 0
    deterministic: bool = False
    log_every_n_steps: int = 50
    resume: str | None = None
    ckpt: dict = field(default_factory=dict)


@dataclass
class Reg:
    l1: float = 0.0
    l2: float = 0.0
    grad_clip: float | None = None


@dataclass
class EarlyStop:
    enabled: bool = True
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = 5
    min_delta: float = 0.0
    baseline: float | None = None
    start_from_epoch: int = 0
    restore_best: bool = True
    stop_on_nonfinite: bool = True


def typed(kind: str, cls: type, node: Any) -> Any:
    check(isinstance(node, dict), f"{kind} must be a mapping of options, got {node!r}")
    check_kwargs(kind, "", cls, node)
    return cls(**node)


def check_trainer(node: dict) -> tuple[Trainer, Ckpt]:
    trainer = typed("trainer", Trainer, node)
    trainer.precision = str(trainer.precision)
    check(trainer.max_epochs >= 1, f"trainer.max_epochs={trainer.max_epochs} must be >= 1")
    check(trainer.devices >= 1, f"trainer.devices={trainer.devices} must be >= 1 (processes)")
    check(trainer.log_every_n_steps >= 0, f"trainer.log_every_n_steps={trainer.log_every_n_steps} must be >= 0")
    return trainer, typed("trainer.ckpt", Ckpt, trainer.ckpt or {})


def check_early_stopping(node: dict, metric_names: list[str]) -> EarlyStop:
    """`metric_names` are what the task logs, e.g. train/loss, val/loss, val/acc."""
    es = typed("early_stopping", EarlyStop, node)
    check(es.patience >= 0, f"early_stopping.patience={es.patience} must be >= 0")
    check(es.min_delta >= 0, f"early_stopping.min_delta={es.min_delta} must be >= 0")
    check(es.start_from_epoch >= 0, f"early_stopping.start_from_epoch={es.start_from_epoch} must be >= 0")
    check(es.monitor in metric_names, f"early_stopping.monitor={es.monitor} is not a metric of this run; "
          f"valid: {', '.join(metric_names)}")
    return es


def check_batch_size(data: dict) -> int:
    size = data.get("batch_size")
    check(isinstance(size, int) and not isinstance(size, bool) and size >= 1,
          f"data.batch_size={size!r} must be an integer >= 1 (the global batch)")
    return size


def to_plain(cfg: Any) -> dict:
    """The resolved config as plain dicts and lists; a missing mandatory value (???) is a ConfigError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key} is required: set it on the command line ({err.full_key}=...)") from None
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).splitlines()[0]) from None


GROUPS = ("model", "data", "optim", "sched", "reg", "early_stopping", "trainer")
TOP_LEVEL = {"task": (str, type(None)), "loss": (str, type(None)), "label_smoothing": (int, float),
             "denoise": (int, float)}


def check_top_level(cfg: dict[str, Any]) -> None:
    """Every group is there (`~model` removes one) and the top-level keys have their types."""
    for group in GROUPS:
        check(isinstance(cfg.get(group), dict), f"the config has no {group} group; choose one ({group}=NAME, "
              f"see dltrain --help) instead of removing it")
    check("lr" in cfg["optim"], "optim.lr is missing; every optimizer needs a learning rate (optim.lr=0.01)")
    for key, types_ in TOP_LEVEL.items():
        value = cfg.get(key)
        check(isinstance(value, types_) and not isinstance(value, bool), f"{key}={value!r} has the wrong type: "
              f"expected {' or '.join('null' if t is type(None) else t.__name__ for t in types_)}")
