"""Assembling a run from a checked RunConfig, in one call: `assemble(config, run_dir, device) -> Assembled`, what
`engine.fit` and the report need (torchtune's setup/train split). Its steps, each usable alone (`evaluation.py`,
`bench/`): data, task and model on the CPU and a check that they fit together (`build`), the threads, the device,
memory layout and wrappers, the optimizer, the loop's settings and the callbacks.

`assemble` reads no module state and keeps none: a launcher may call it for many runs in one process. What it sets
for the process (torch's threads, deterministic algorithms, the seed) `train.train` saves and restores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from dltrain.core import dist
from dltrain.core import profiling  # noqa: F401  (registers the "profiler" callback: trainer.profile)
from dltrain.core.callbacks import CALLBACKS
from dltrain.core.ema import Ema
from dltrain.core.engine import Best, Callback, LoopSettings, Split, State, fit, min_share, steps_per_epoch
from dltrain.core.optim import build_optimizer
from dltrain.core.registry import ConfigError, Registry, Spec, check, first_line
from dltrain.core.sched import build_schedule
from dltrain.core.tasks import Direction, Task, build_task, monitor_mode
from dltrain.data import DATASETS, DataBundle
from dltrain.data.augment import Augment, build_augment
from dltrain.models import MODELS, ModelTraits, model_traits, param_groups
from dltrain.run import init_from, threads
from dltrain.run.config import RunConfig
from dltrain.run.config_types import TrainerConfig
from dltrain.run.door import check_monitor
from dltrain.run.plugins import run_origin, user_frame

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass
class RunComponents:
    """Everything a run trains with, built on the CPU from its config."""

    config: RunConfig
    data: DataBundle
    task: Task
    task_name: str  # the configured task, or the data's own
    model: nn.Module
    traits: ModelTraits  # what the model's registration declares (channels_last, generative)
    augment: Augment | None  # on-device augmentation of training batches
    mode: Direction = "min"  # early_stopping.mode resolved for the monitored metric (auto: the task's direction)
    warnings: list[str] = field(default_factory=list)  # what trains but is likely a mistake: a run prints them once


def build(config: RunConfig) -> RunComponents:
    """Build data, task and model; a model that cannot take the data fails here, not mid-run."""
    torch.manual_seed(config.trainer.seed)
    data = user_code(DATASETS, config.data.spec, DataBundle, seed=config.trainer.seed)
    check(config.data.batch_size <= len(data.train), f"data.batch_size={config.data.batch_size} is larger than the "
          f"training split ({len(data.train)} samples); use data.batch_size={len(data.train)} or less")
    task_name = config.task.name or data.task
    task = build_task(task_name, loss=config.task.loss, label_smoothing=config.task.label_smoothing,
                      denoise=config.task.denoise)
    model_name, data_name = config.model.name, config.data.spec.name
    data_args = data.model_args()
    missing = set(data_args) - set(MODELS.builder_args(model_name))
    check(not missing, f"model={model_name} cannot take data={data_name} (it needs a model that accepts "
          f"{', '.join(sorted(missing))}, e.g. model=lstm)")
    model = user_code(MODELS, config.model, nn.Module, in_shape=data.in_shape, num_outputs=data.num_outputs,
                      **data_args)
    traits = model_traits(model_name)
    check_fits(model, task, data, model_name, task_name, traits)
    check_accumulate(config, len(data.train), min_share(model))
    monitor = config.early_stopping.best.get("monitor", Best.monitor)
    check_monitor(monitor, task, task_name)  # again: the door knew only some task's metrics if the data decides
    check(len(data.val) > 0 or not monitor.startswith("val/"), f"the validation split is empty, so "
          f"early_stopping.monitor={monitor} has no values; give data a validation share or monitor train/loss")
    mode, warning = monitor_mode(config.early_stopping.best.get("mode", Best.mode), monitor, task, task_name)
    augment = build_augment(**config.data.augment) if config.data.augment else None
    warnings = [*data.warnings, *([warning] if warning else [])]
    return RunComponents(config, data, task, task_name, model, traits, augment, mode, warnings)


@dataclass
class Assembled:
    """A run ready to fit: what `engine.fit` takes and what the report reads."""

    parts: RunComponents  # the config, the data on the CPU, the task, the raw model and its traits, the warnings
    state: State  # the model the step calls (DDP-, compile-wrapped), the raw model, optimizer, best, scaler
    settings: LoopSettings
    callbacks: list[Callback]  # the writers on rank 0 only
    splits: tuple[Split, Split, Split]  # train, val, test, on the device
    channels_last: bool  # the model and 4-d inputs are in channels_last memory format
    thread_choice: threads.ThreadChoice  # this process's intra-op threads and why
    origin: dict[str, Any]  # where the run came from (plugins.run_origin), for metrics.json and each checkpoint
    run_dir: Path = Path(".")  # the run's folder (its files: config.yaml, metrics.json, checkpoints, events)

    def fit(self) -> State:
        return fit(self.state, self.parts.task, *self.splits, self.settings, self.callbacks)


def assemble(config: RunConfig, run_dir: Path, device: torch.device) -> Assembled:
    """Build the parts (`build`), choose the threads, wrap and place the model and data on `device`, make the
    optimizer, settings and callbacks. `device` is this process's (train.train sets up DDP before)."""
    parts = build(config)
    origin = run_origin(Path(config.project) if config.project else None)  # git and versions: once per run
    origin.update(init_from.start(parts.model, config.trainer))  # fine-tuning: weights, freeze (before DDP wraps)
    trainer = config.trainer
    chosen = threads.settle(parts.model, parts.data.train.x[:1], config.data.batch_size // dist.world_size(),
                            trainer.threads, trainer.resume)  # before the model can move to a GPU
    if trainer.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    model, channels_last = wrap_model(parts, device)  # DDP copies rank 0's initial weights to every rank
    if dist.rank() > 0:  # own dropout masks and GAN noise per process; rank 0 keeps the 1-process stream
        torch.manual_seed(trainer.seed + dist.rank())
    data = parts.data
    train, val, test = (to_device(split, device, channels_last) for split in (data.train, data.val, data.test))
    optimizer, lr_scales = make_optimizer(parts)
    state = State(model=model, raw_model=parts.model, optimizer=optimizer, best=make_best(parts),
                  scaler=torch.amp.GradScaler(device.type, enabled=str(trainer.precision) == "16"), ema=make_ema(parts))
    callbacks = make_callbacks(parts, run_dir, origin)
    return Assembled(parts, state, make_settings(parts, len(train), lr_scales), callbacks, (train, val, test),
                     channels_last, chosen, origin, run_dir)


def user_code(registry: Registry, spec: Spec, returns: type, **runtime: Any) -> Any:
    """Build `spec`; a crash inside a user's builder (a plugin, not dltrain's own) is one line naming their file, and
    so is a builder that returns something other than a `returns` (a module, a DataBundle)."""
    builder = registry.get(spec.name)
    if builder.__module__.split(".")[0] == "dltrain":
        return registry.build(spec, **runtime)
    try:
        built = registry.build(spec, **runtime)
    except ConfigError:
        raise
    except (Exception, SystemExit) as err:  # noqa: BLE001  (the user's code: one line naming their file and line)
        raise ConfigError(f"{registry.kind}={spec.name} failed in your code{user_frame(err)}: "
                          f"{type(err).__name__}: {first_line(err)}") from None
    code = getattr(builder, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
    wanted = "torch.nn.Module" if returns is nn.Module else "dltrain.DataBundle"
    check(isinstance(built, returns), f"{registry.kind}={spec.name}: your builder {builder.__name__}{where} "
          f"returned {type(built).__name__}, not a {wanted}")
    return built


def check_fits(model: nn.Module, task: Task, data: DataBundle, name: str, task_name: str,
               traits: ModelTraits) -> None:
    """One forward pass on two training samples: a clear message instead of a shape error mid-run."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            task.step(model, data.train.x[:2], data.train.y[:2])
    except Exception as err:  # noqa: BLE001  (whatever the model raises, the user gets one line)
        hint = " (model=gan trains with task=adversarial)" if traits.generative else ""
        raise ConfigError(f"model={name} with task={task_name} cannot take the data's samples of shape "
                          f"{tuple(data.in_shape)}{hint}{user_frame(err)}: {first_line(err)}") from None
    finally:
        model.train(was_training)


def check_accumulate(config: RunConfig, train_size: int, share: int) -> None:
    """trainer.accumulate at most the batches of an epoch: an optimizer step never spans two epochs, so a larger one
    would step once per epoch on fewer samples than data.batch_size * accumulate (refused, as a batch larger than
    the training split is)."""
    accumulate, batch_size = config.trainer.accumulate, config.data.batch_size
    batches = steps_per_epoch(train_size, batch_size, max(dist.world_size(), config.trainer.devices), share)
    check(accumulate == 1 or accumulate <= batches, f"trainer.accumulate={accumulate} exceeds the {batches} batches "
          f"of an epoch ({train_size} training samples at data.batch_size={batch_size}) and a step never spans two "
          f"epochs; use trainer.accumulate={max(batches, 1)} or less, or a smaller data.batch_size")


def pick_device(trainer: TrainerConfig) -> torch.device:
    if trainer.device == "cuda" or (trainer.device == "auto" and torch.cuda.is_available()):
        check(torch.cuda.is_available(), "trainer.device=cuda but no CUDA GPU is visible; use trainer.device=cpu or auto")
        return torch.device("cuda")
    return torch.device("cpu")


def to_device(split: Split, device: torch.device, channels_last: bool) -> Split:
    x = split.x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return Split(x, split.y.to(device, non_blocking=True))


def wrap_model(parts: RunComponents, device: torch.device) -> tuple[nn.Module, bool]:
    """Device, memory layout, DDP and torch.compile; returns the model the step calls and channels_last."""
    model = parts.model.to(device)
    trainer = parts.config.trainer
    wanted = trainer.channels_last is True or (trainer.channels_last == "auto" and device.type == "cuda"
                                               and parts.traits.channels_last)
    channels_last = wanted and len(parts.data.in_shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.is_initialized():
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if trainer.compile:
        model = torch.compile(model)
    return model, channels_last


def make_optimizer(parts: RunComponents) -> tuple[torch.optim.Optimizer, tuple[float, ...]]:
    """The optimizer over the model's parameter groups, and each torch group's learning-rate scale."""
    groups = init_from.groups(parts.model, param_groups(parts.model, parts.traits), parts.config.trainer)
    optimizer = build_optimizer(parts.config.optim, groups)
    scale_of = {id(p): group.lr_scale for group in groups for p in group.params}  # a torch group may be a split
    return optimizer, tuple(scale_of[id(g["params"][0])] if g["params"] else 1.0 for g in optimizer.param_groups)


def make_settings(parts: RunComponents, train_size: int, lr_scales: tuple[float, ...]) -> LoopSettings:
    """The loop's knobs; the schedule's length is the run's, in its interval's units."""
    config = parts.config
    trainer, sched, reg = config.trainer, config.sched, config.reg
    per_step = sched.interval == "step"
    # the optimizer steps the engine will take: a dropped last batch excluded, one per `accumulate` batches (ceil)
    steps = steps_per_epoch(train_size, config.data.batch_size, max(dist.world_size(), trainer.devices),
                            min_share(parts.model), trainer.accumulate)
    total = trainer.max_epochs * (steps if per_step else 1)
    return LoopSettings(max_epochs=trainer.max_epochs, batch_size=config.data.batch_size,
                        lr_at=build_schedule(sched, config.optim.kwargs["lr"], total), lr_per_step=per_step,
                        lr_scales=lr_scales, seed=trainer.seed, autocast_dtype=PRECISIONS[str(trainer.precision)],
                        grad_clip=reg.grad_clip, l1=reg.l1, l2=reg.l2, log_every_n_steps=trainer.log_every_n_steps,
                        augment=parts.augment, accumulate=trainer.accumulate)


def make_ema(parts: RunComponents) -> Ema | None:
    """trainer.ema's averaged copy of the model, made once the model is on its device (and DDP has given every rank
    rank 0's initial weights): it starts from them."""
    ema = parts.config.ema
    return Ema(parts.model, ema.decay, ema.warmup) if ema.decay is not None else None


def make_best(parts: RunComponents) -> Best:
    return Best(**{**parts.config.early_stopping.best, "mode": parts.mode})


def callback_specs(config: RunConfig) -> list[Spec]:
    """Every callback of the run, in the order they run: the built-ins with their YAML options (from their own keys:
    the early_stopping group, trainer.ckpt), the user's `callbacks` mapping among them, as the run always had."""
    def own(name: str, **options: Any) -> Spec:
        return Spec(CALLBACKS.kind, name, options)

    ckpt = config.checkpoints
    profiler = [own("profiler", steps=config.trainer.profile)] if config.trainer.profile else []  # 0: not built
    return [own("early_stopping", **config.early_stopping.stopping), *config.callbacks, own("tensorboard"),
            own("progress"), own("checkpoints", save_last=ckpt.save_last, save_best=ckpt.save_best), *profiler]


def make_callbacks(parts: RunComponents, run_dir: Path, origin: dict[str, Any]) -> list[Callback]:
    """Each callback built alike, a built-in as a user's: its YAML options, and of the run-time arguments
    (callbacks.RUNTIME) those its __init__ takes, made only then. The writers (`main_only`) on rank 0 only; early
    stopping and the user's on every rank (they must agree when to stop)."""
    config = parts.config
    callbacks: list[Callback] = []
    runtime = {"run_dir": lambda: run_dir, "max_epochs": lambda: config.trainer.max_epochs,
               "hparams": lambda: flat_hparams(config.resolved),
               "sample": lambda: parts.model.sample if parts.traits.generative else None,
               "extra": lambda: checkpoint_extra(parts, origin), "callbacks": lambda: list(callbacks)}  # those before it
    for spec in callback_specs(config):
        if CALLBACKS.traits(spec.name).get("main_only") and not dist.is_rank0():
            continue
        wanted = [key for key in CALLBACKS.builder_args(spec.name) if key in runtime]
        callbacks.append(CALLBACKS.build(spec, **{key: runtime[key]() for key in wanted}))
    return callbacks


def checkpoint_extra(parts: RunComponents, origin: dict[str, Any]) -> dict[str, Any]:
    """What each checkpoint carries besides the training state: the config, where the run came from (`origin`:
    plugins.run_origin's git commit and provenance, computed once per run) and the preprocessing."""
    return {"config": yaml.safe_dump(parts.config.resolved, sort_keys=False), **origin,
            "preprocessing": parts.data.description()}  # what `dltrain predict` and export apply to raw inputs


def flat_hparams(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Config leaves as HParams values: numbers, strings and booleans; lists and nulls as text."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = str(value)
    return out
