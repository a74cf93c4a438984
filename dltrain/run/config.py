"""The run config, parsed once at the door: `RunConfig.parse(cfg)` turns the composed Hydra config (plain
dicts) into checked, typed objects for every group, collecting every problem (one line each) into one
ConfigError. Below the door nothing reads the raw dict; `resolved` is kept only to be saved (config.yaml,
checkpoints) and shown (TensorBoard's HParams).

Groups with a registry (model, data, optim, sched) are checked against their builders' signatures; the
others against the one class that uses them (TrainerConfig, RegConfig, engine.Best, callbacks.EarlyStopping).
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dltrain.core.callbacks import CALLBACKS, EarlyStopping
from dltrain.core.conf_dirs import config_dir, groups  # noqa: F401  (re-exported: where the YAML lives)
from dltrain.core.engine import Best
from dltrain.core.optim import parse_optimizer
from dltrain.core.registry import ConfigError, Problems, Spec, check, check_all, check_kwargs
from dltrain.core.sched import ScheduleSpec, parse_schedule
from dltrain.core.tasks import build_task
from dltrain.data import DATASETS
from dltrain.data.augment import build_augment
from dltrain.models import MODELS, model_traits
from dltrain.run import init_from
from dltrain.run.config_types import (  # the groups' types (door.py reads them too)
    CheckpointConfig,
    DataConfig,
    EarlyStoppingConfig,
    EmaConfig,
    RegConfig,
    TaskConfig,
    TrainerConfig,
)
from dltrain.run.door import check_across

GROUPS = ("model", "data", "optim", "sched", "reg", "early_stopping", "trainer")
TOP_LEVEL = ("task", "loss", "label_smoothing", "denoise")


@dataclass(frozen=True)
class RunConfig:
    model: Spec
    data: DataConfig
    optim: Spec
    sched: ScheduleSpec
    reg: RegConfig
    early_stopping: EarlyStoppingConfig
    trainer: TrainerConfig
    checkpoints: CheckpointConfig
    task: TaskConfig
    callbacks: tuple[Spec, ...]  # the user's registered callbacks (top-level `callbacks` mapping)
    resolved: dict[str, Any]  # the composed config as plain data: saved and shown, never read for settings
    plugins: tuple[str, ...] = ()  # plugin files/modules already imported (so DDP workers import them too)
    project: str | None = None  # the user's project folder, if any
    ema: EmaConfig = EmaConfig()  # trainer.ema

    @classmethod
    def load(cls, cfg: Any, project: Path | None) -> RunConfig:
        """Import the project's plugins (the config's `plugins`, from the user's own project), then parse."""
        from dltrain.run import plugins

        names = cfg.get("plugins") if isinstance(cfg, dict) else None
        check(names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names)),
              f"plugins={names!r} must be a list of Python files or module names, e.g. [models.py]")
        loaded = plugins.load(names or [], project)
        return dataclasses.replace(cls.parse(cfg, inputs=True), plugins=tuple(loaded),
                                   project=str(project) if project else None)

    @classmethod
    def parse(cls, cfg: Any, inputs: bool = False, trained: bool = False) -> RunConfig:
        """Check every group, then across groups (door.py; `inputs`: the data's files): one ConfigError, every problem.
        `trained`: the config of a run that has trained, read by eval, export, predict or generate: its optimizer is
        not built to check its options, since nothing steps it (torch.optim's first build imports torch._dynamo,
        ~1.5 s of such a command's ~4 s on 2 cores)."""
        check(isinstance(cfg, dict), f"the config must be a mapping, got {type(cfg).__name__}")
        problems = Problems()
        for group in GROUPS:
            with problems.collect():
                check(isinstance(cfg.get(group), dict), f"the config has no {group} group; choose one "
                      f"({group}=NAME, see dltrain --help) instead of removing it")
        problems.found += unknown_top_level(cfg) + unusable_numbers(cfg)
        problems.raise_if_any()
        parsed: dict[str, Any] = {}
        parsers = {**PARSERS, "optim": lambda c: parse_optim(c, built=False)} if trained else PARSERS
        for key, parse in parsers.items():
            with problems.collect():
                parsed[key] = parse(cfg)
        with problems.collect():
            check_across(cfg, parsed, inputs)
        problems.raise_if_any()
        return cls(**parsed, resolved=cfg)


KNOWN_TOP_LEVEL = (*GROUPS, *TOP_LEVEL, "plugins", "callbacks")
FLOAT32_MAX = 3.4028234663852886e38  # torch computes in float32: a larger setting overflows mid-run


def unknown_top_level(cfg: dict[str, Any]) -> list[str]:
    """A key added with `+key=...` that nothing reads would be silently ignored."""
    return [f"{key} is not a setting of dltrain (added with +{key}=...?); top-level keys are: "
            f"{', '.join(KNOWN_TOP_LEVEL)}" for key in cfg if key not in KNOWN_TOP_LEVEL]


def unusable_numbers(node: Any, prefix: str = "") -> list[str]:
    """NaN, infinities and numbers beyond float32's range are never meaningful settings."""
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in unusable_numbers(value, f"{prefix}{key}.")]
    if isinstance(node, list):
        return [p for i, value in enumerate(node) for p in unusable_numbers(value, f"{prefix}{i}.")]
    key = prefix.rstrip(".")
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{key}={node} is not a finite number"]
    if isinstance(node, (int, float)) and not isinstance(node, bool) and abs(node) > FLOAT32_MAX:
        shown = f"{node:.3g}" if isinstance(node, float) else f"{str(node)[:6]}... ({len(str(abs(node)))} digits)"
        return [f"{key}={shown} is too large for float32 training (at most 3.4e38 in magnitude)"]
    return []


def checked_dataclass(kind: str, cls: type, node: Any) -> Any:
    """A dataclass from a mapping whose keys and types are checked against the class's fields."""
    check(isinstance(node, dict), f"{kind} must be a mapping of options, got {node!r}")
    check_kwargs(kind, "", cls, node)
    return cls(**node)


def parse_trainer(cfg: dict[str, Any]) -> TrainerConfig:
    node = dict(cfg["trainer"])
    if isinstance(node.get("precision"), int) and not isinstance(node.get("precision"), bool):
        node["precision"] = str(node["precision"])
    trainer = checked_dataclass("trainer", TrainerConfig, node)
    check_all((trainer.max_epochs >= 1, f"trainer.max_epochs={trainer.max_epochs} must be >= 1"),
              (trainer.devices >= 1, f"trainer.devices={trainer.devices} must be >= 1 (processes)"),
              (trainer.threads is None or trainer.threads >= 1,
               f"trainer.threads={trainer.threads} must be >= 1 (CPU threads per process), or null for automatic"),
              (trainer.log_every_n_steps >= 0,
               f"trainer.log_every_n_steps={trainer.log_every_n_steps} must be >= 0"),
              (trainer.accumulate >= 1, f"trainer.accumulate={trainer.accumulate} must be an integer >= 1 (batches "
               "whose gradients one optimizer step sums; 1 = a step per batch)"),
              (0 <= trainer.seed < 2**63, f"trainer.seed={trainer.seed} must be in [0, 2**63)"),
              (trainer.profile >= 0, f"trainer.profile={trainer.profile} must be >= 0 (training steps to profile "
                                     "after 3 warm-up steps; 0 = off)"),
              (trainer.resume is None or trainer.resume.strip() != "",
               "trainer.resume is empty; give a run directory or checkpoint, or null for a new run"),
              (trainer.init_from is None or trainer.init_from.strip() != "",
               "trainer.init_from is empty; give a run directory or checkpoint to start from, or null"),
              *((False, problem) for problem in init_from.check_patterns(trainer)))
    return trainer


def parse_data(cfg: dict[str, Any]) -> DataConfig:
    node = cfg["data"]
    problems = Problems()
    with problems.collect():
        spec = DATASETS.parse(node, skip=("batch_size", "augment"))
    size = node.get("batch_size")
    with problems.collect():
        check(isinstance(size, int) and not isinstance(size, bool) and size >= 1,
              f"data.batch_size={size!r} must be an integer >= 1 (the global batch)")
    augment = node.get("augment") or None
    if augment is not None:
        with problems.collect():
            check(isinstance(augment, dict), f"data.augment must be a mapping of options, got {augment!r}")
            check_kwargs("data.augment", "", build_augment, augment)
            build_augment(**augment)  # its value checks
    problems.raise_if_any()
    return DataConfig(spec, size, augment)


def parse_reg(cfg: dict[str, Any]) -> RegConfig:
    reg = checked_dataclass("reg", RegConfig, cfg["reg"])
    check_all((reg.l1 >= 0, f"reg.l1={reg.l1} must be >= 0"), (reg.l2 >= 0, f"reg.l2={reg.l2} must be >= 0"),
              (reg.grad_clip is None or reg.grad_clip > 0, f"reg.grad_clip={reg.grad_clip} must be > 0 or null"))
    return reg


def parse_early_stopping(cfg: dict[str, Any]) -> EarlyStoppingConfig:
    """Keys checked against engine.Best (what is monitored and kept) and callbacks.EarlyStopping (when to stop)."""
    node = cfg["early_stopping"]
    check(isinstance(node, dict), f"early_stopping must be a mapping of options, got {node!r}")
    owners = {cls: list(inspect.signature(cls).parameters) for cls in (Best, EarlyStopping)}
    valid = [k for keys in owners.values() for k in keys]
    unknown = [k for k in node if k not in valid]
    check(not unknown, "; ".join(f"early_stopping.{k} is not an option of early_stopping; valid: {', '.join(valid)}"
                                 for k in unknown))
    parts = {cls: {k: v for k, v in node.items() if k in keys} for cls, keys in owners.items()}
    problems = Problems()
    for cls, kwargs in parts.items():
        with problems.collect():
            check_kwargs("early_stopping", "", cls, kwargs)
    problems.raise_if_any()
    best, stopping = parts[Best], parts[EarlyStopping]
    for ok, message in [(best.get("min_delta", 0) >= 0, f"early_stopping.min_delta={best.get('min_delta')} must be >= 0"),
              (best.get("start_from_epoch", 0) >= 0,
                         f"early_stopping.start_from_epoch={best.get('start_from_epoch')} must be >= 0"),
              (stopping.get("patience", 0) >= 0, f"early_stopping.patience={stopping.get('patience')} must be >= 0"),
              (str(best.get("monitor", "val/loss")).startswith(("train/", "val/")),
                         f"early_stopping.monitor={best.get('monitor')} must be a train/ or val/ metric, e.g. val/loss")]:
        with problems.collect():
            check(ok, message)
    problems.raise_if_any()
    return EarlyStoppingConfig(best, stopping)


def parse_task(cfg: dict[str, Any]) -> TaskConfig:
    types_ = {"task": (str, type(None)), "loss": (str, type(None)), "label_smoothing": (int, float),
              "denoise": (int, float)}
    problems = Problems()
    for key, allowed in types_.items():
        value = cfg.get(key)
        with problems.collect():
            check(isinstance(value, allowed) and not isinstance(value, bool), f"{key}={value!r} has the wrong type: "
                  f"expected {' or '.join('null' if t is type(None) else t.__name__ for t in allowed)}")
    problems.raise_if_any()
    task = TaskConfig(cfg["task"], cfg["loss"], float(cfg["label_smoothing"]), float(cfg["denoise"]))
    if task.name is not None:  # the data's own task, as its registration declares it: door.py
        build_task(task.name, loss=task.loss, label_smoothing=task.label_smoothing, denoise=task.denoise)
    return task


def parse_optim(cfg: dict[str, Any], built: bool = True) -> Spec:
    check("lr" in cfg["optim"], "optim.lr is missing; every optimizer needs a learning rate (optim.lr=0.01)")
    return parse_optimizer(cfg["optim"], built=built)


def parse_sched(cfg: dict[str, Any]) -> ScheduleSpec:
    lr0 = cfg["optim"].get("lr")
    return parse_schedule(cfg["sched"], lr0 if isinstance(lr0, (int, float)) and not isinstance(lr0, bool) else 0.1)


def parse_checkpoints(cfg: dict[str, Any]) -> CheckpointConfig:
    return checked_dataclass("trainer.ckpt", CheckpointConfig, cfg["trainer"].get("ckpt") or {})


def parse_ema(cfg: dict[str, Any]) -> EmaConfig:
    """trainer.ema: its keys and range (rules on EmaConfig); a GAN's two networks, trained against each other, are
    not averaged (refused rather than half supported)."""
    ema = checked_dataclass("trainer.ema", EmaConfig, cfg["trainer"].get("ema") or {})
    model = cfg["model"].get("name")
    generative = model in MODELS.names() and model_traits(model).generative
    check(ema.decay is None or not (generative or cfg.get("task") == "adversarial"), f"trainer.ema.decay={ema.decay} "
          f"is not supported with model={model} (task=adversarial: a generator and a discriminator trained against "
          "each other); use trainer.ema.decay=null")
    return ema


def parse_callbacks(cfg: dict[str, Any]) -> tuple[Spec, ...]:
    """`callbacks: {name: {options}}`: each a registered callback whose options fit its signature."""
    node = cfg.get("callbacks") or {}
    check(isinstance(node, dict), f"callbacks={node!r} must be a mapping of callback names to their options")
    problems, specs = Problems(), []
    for name, options in node.items():
        with problems.collect():
            check(options is None or isinstance(options, dict), f"callbacks.{name} must be a mapping of options")
            check_user_callback(str(name))
            specs.append(CALLBACKS.parse({"name": name, **(options or {})}))
    problems.raise_if_any()
    return tuple(specs)


def check_user_callback(name: str) -> None:
    """A name in `callbacks` is one of the user's registered callbacks: dltrain's own are always on and set by their
    own keys (the early_stopping group, trainer.ckpt), so neither listed nor accepted here."""
    users = [n for n in CALLBACKS.names() if "builtin" not in CALLBACKS.traits(n)]
    check(name in CALLBACKS.names(), f"unknown callback '{name}'; valid: {', '.join(users)}")
    if "builtin" in CALLBACKS.traits(name):
        where = CALLBACKS.traits(name)["builtin"]
        raise ConfigError(f"callbacks.{name} is dltrain's own callback, always on" +
                          (f" (its options are the {where} keys)" if where else " (it has no options)") +
                          f"; `callbacks` adds your registered ones: {', '.join(users) or 'none registered'}")


PARSERS = {"model": lambda cfg: MODELS.parse(cfg["model"]), "data": parse_data, "optim": parse_optim,
           "sched": parse_sched, "reg": parse_reg, "early_stopping": parse_early_stopping,
           "trainer": parse_trainer, "checkpoints": parse_checkpoints, "ema": parse_ema, "task": parse_task,
           "callbacks": parse_callbacks}


def to_plain(cfg: Any) -> dict:
    """The resolved config as plain dicts and lists; a missing mandatory value (???) is a ConfigError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    from dltrain.run.overrides import interpolation_line

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key} is required: set it on the command line ({err.full_key}=...)") from None
    except OmegaConfBaseException as err:
        raise ConfigError(interpolation_line(err)) from None
