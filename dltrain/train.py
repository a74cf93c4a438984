"""One run, from a resolved config to metrics.json: build the parts, place them on the device, fit, report.

`run_job` is what the CLI calls for each Hydra job; with trainer.devices > 1 it starts that many DDP
workers (each runs `train`) and waits. Everything is built and checked once on the CPU before any worker
starts, so a config error is one line from the parent process.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from dltrain import checkpoint, dist
from dltrain.callbacks import Checkpointer, EarlyStopping, Progress, TensorBoard
from dltrain.config import (Ckpt, EarlyStop, Reg, Trainer, check_batch_size, check_early_stopping, check_top_level,
                            check_trainer, typed)
from dltrain.data import DATASETS, DataBundle, Split
from dltrain.engine import Settings, State, fit
from dltrain.models import MODELS
from dltrain.optim import OPTIMIZERS
from dltrain.reg import check_reg
from dltrain.registry import ConfigError, check, check_kwargs
from dltrain.sched import build_schedule
from dltrain.tasks import Task, build_task

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass
class Parts:
    """Everything a run trains with, built on the CPU from the config."""

    trainer: Trainer
    ckpt: Ckpt
    reg: Reg
    early_stop: EarlyStop
    batch_size: int
    data: DataBundle
    task: Task
    model: nn.Module
    augment: Any = None  # on-device augmentation of training batches, or None


def build(cfg: dict[str, Any]) -> Parts:
    """Check and build data, task and model; a model that cannot take the data fails here, not mid-run."""
    check_top_level(cfg)
    trainer, ckpt = check_trainer(cfg["trainer"])
    reg = typed("reg", Reg, cfg["reg"])
    check_reg(reg.l1, reg.l2, reg.grad_clip)
    batch_size = check_batch_size(cfg["data"])
    torch.manual_seed(trainer.seed)
    data = DATASETS.build(cfg["data"], skip=("batch_size", "augment"), seed=trainer.seed)
    task = build_task(cfg.get("task") or data.task, cfg.get("loss"), cfg.get("label_smoothing", 0.0),
                      cfg.get("denoise", 0.0))
    model_args = data.meta.get("model_args", {})
    missing = set(model_args) - set(MODELS.config_keys(cfg["model"].get("name", "")))
    check(not missing, f"model={cfg['model']['name']} cannot take data={cfg['data']['name']} "
          f"(it needs a model that accepts {', '.join(sorted(missing))}, e.g. model=lstm)")
    model = MODELS.build(cfg["model"], in_shape=data.in_shape, num_outputs=data.num_outputs, **model_args)
    check_fits(model, task, data, cfg["model"]["name"], cfg.get("task") or data.task)
    names = ["train/loss", "val/loss"] + [f"{s}/{m}" for s in ("train", "val") for m in task.metric_names]
    early_stop = check_early_stopping(cfg["early_stopping"], names)
    check(len(data.val) > 0 or not early_stop.monitor.startswith("val/"), f"the validation split is empty, so "
          f"early_stopping.monitor={early_stop.monitor} has no values; give data a validation share or monitor train/loss")
    augment = build_augment(cfg["data"].get("augment"))
    return Parts(trainer, ckpt, reg, early_stop, batch_size, data, task, model, augment)


def check_fits(model: nn.Module, task: Task, data: DataBundle, name: str, task_name: str) -> None:
    """One forward pass on two training samples: a clear message instead of a shape error mid-run."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            task.step(model, data.train.x[:2], data.train.y[:2])
    except Exception as err:  # noqa: BLE001  (whatever the model raises, the user gets one line)
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        hint = " (model=gan trains with task=adversarial)" if hasattr(model, "sample") else ""
        raise ConfigError(f"model={name} with task={task_name} cannot take the data's samples of shape "
                          f"{tuple(data.in_shape)}{hint}: {detail}") from None
    finally:
        model.train(was_training)


def pick_device(trainer: Trainer) -> torch.device:
    if trainer.device == "cuda" or (trainer.device == "auto" and torch.cuda.is_available()):
        check(torch.cuda.is_available(), "trainer.device=cuda but no CUDA GPU is visible; use trainer.device=cpu or auto")
        return torch.device("cuda")
    return torch.device("cpu")


def to_device(split: Split, device: torch.device, channels_last: bool) -> Split:
    x = split.x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return Split(x, split.y.to(device, non_blocking=True))


def wrap_model(parts: Parts, device: torch.device) -> tuple[nn.Module, bool]:
    """Device, memory layout, DDP and torch.compile; returns the model the step calls and channels_last."""
    model = parts.model.to(device)
    trainer = parts.trainer
    channels_last = (trainer.channels_last is True or (trainer.channels_last == "auto" and device.type == "cuda"
                     and getattr(parts.model, "channels_last", False))) and len(parts.data.in_shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.is_initialized():
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if trainer.compile:
        model = torch.compile(model)
    return model, channels_last


def train(cfg: dict[str, Any], run_dir: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Train one process's share of the run (all of it without DDP); rank 0 writes and returns the report."""
    trainer, _ = check_trainer(cfg["trainer"])
    if trainer.deterministic:  # cuBLAS refuses deterministic mode without a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = pick_device(trainer)
    device = dist.setup(device.type) or device
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    if trainer.compile:
        torch._dynamo.reset()  # each run of a sweep in one process compiles afresh, within dynamo's limits
    try:
        return _train(cfg, run_dir, device, list(overrides))
    finally:  # a run must not change the next one in this process
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        dist.teardown()


def _train(cfg: dict[str, Any], run_dir: Path, device: torch.device, overrides: list[str]) -> dict[str, Any]:
    parts = build(cfg)
    trainer = parts.trainer
    if trainer.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    model, channels_last = wrap_model(parts, device)  # DDP copies rank 0's initial weights to every rank
    if dist.rank() > 0:  # own dropout masks and GAN noise per process; rank 0 keeps the 1-process stream
        torch.manual_seed(trainer.seed + dist.rank())
    train_split, val, test = (to_device(s, device, channels_last) for s in (parts.data.train, parts.data.val,
                                                                              parts.data.test))
    state = State(model=model, raw_model=parts.model, optimizer=OPTIMIZERS.build(cfg["optim"], params=param_groups(
        parts.model)), scaler=torch.amp.GradScaler(device.type, enabled=trainer.precision == "16"))
    settings = make_settings(cfg, parts, len(train_split))
    stopper = EarlyStopping(**vars(parts.early_stop))
    if trainer.resume:
        checkpoint.resume(state, stopper, trainer.resume, device, trainer.max_epochs)
    if dist.is_main():  # only now: a failed resume leaves the resumed run's files as they were
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    fit(state, parts.task, train_split, val, test, settings, make_callbacks(cfg, parts, stopper, run_dir))
    report = make_report(state, stopper, parts, overrides)
    if dist.is_main():
        (run_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def make_settings(cfg: dict[str, Any], parts: Parts, train_size: int) -> Settings:
    """The loop's knobs; the schedule's length is the run's, in its interval's units."""
    trainer = parts.trainer
    per_step = cfg["sched"].get("interval", "epoch") == "step"
    total = trainer.max_epochs * (math.ceil(train_size / parts.batch_size) if per_step else 1)
    return Settings(max_epochs=trainer.max_epochs, batch_size=parts.batch_size,
                    lr_at=build_schedule(cfg["sched"], cfg["optim"]["lr"], total), lr_per_step=per_step,
                    seed=trainer.seed, autocast_dtype=PRECISIONS[trainer.precision], grad_clip=parts.reg.grad_clip,
                    l1=parts.reg.l1, l2=parts.reg.l2, log_every_n_steps=trainer.log_every_n_steps,
                    augment=parts.augment)


def param_groups(model: nn.Module) -> Any:
    """A model may split its parameters into groups with their own `lr_scale` (a GAN's two networks)."""
    return model.param_groups() if hasattr(model, "param_groups") else model.parameters()


def build_augment(node: dict | None) -> Any:
    """The data's `augment` node (checked like any builder's keys), or None."""
    if not node:
        return None
    from dltrain.data.augment import build_augment as builder

    check_kwargs("data.augment", "", builder, node)
    return builder(**node)


def make_callbacks(cfg: dict[str, Any], parts: Parts, stopper: EarlyStopping, run_dir: Path) -> list:
    callbacks: list = [stopper]
    if dist.is_main():
        extra = {"config": yaml.safe_dump(cfg, sort_keys=False), "git_commit": checkpoint.git_commit()}
        callbacks += [Checkpointer(run_dir, stopper, extra, parts.ckpt.save_last, parts.ckpt.save_best),
                      TensorBoard(run_dir, flat_hparams(cfg), stopper), Progress(parts.trainer.max_epochs)]
    return callbacks


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


def make_report(state: State, stopper: EarlyStopping, parts: Parts, overrides: list[str]) -> dict[str, Any]:
    return {
        "status": "completed",
        "stop_reason": state.stop_reason,
        "epochs": state.epoch,
        "monitor": stopper.monitor,
        "mode": stopper.mode,
        "best": stopper.best,
        "best_epoch": stopper.best_epoch,
        "final": state.metrics,
        "test": state.final,
        "train_seconds": state.train_seconds,
        "samples_per_sec": state.samples_seen / state.train_seconds if state.train_seconds else None,
        "world_size": dist.world_size(),
        "device": str(next(parts.model.parameters()).device),
        "overrides": overrides,
        "git_commit": checkpoint.git_commit(),
    }


def run_job(cfg: dict[str, Any], run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """One Hydra job: save the resolved config, train (in N DDP workers if asked), print the summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer, _ = check_trainer(cfg["trainer"])
    if trainer.devices > 1 and not dist.launched_externally():
        parts = build(cfg)  # every check happens here, in the parent, before a worker starts
        check(parts.batch_size >= trainer.devices, f"data.batch_size={parts.batch_size} is smaller than "
              f"trainer.devices={trainer.devices}: each process needs a share of the global batch")
        if trainer.resume:
            optimizer = OPTIMIZERS.build(cfg["optim"], params=param_groups(parts.model))
            checkpoint.check_resumable(parts.model, checkpoint.load(trainer.resume), optimizer, trainer.max_epochs)
        if pick_device(trainer).type == "cuda":
            check(torch.cuda.device_count() >= trainer.devices, f"trainer.devices={trainer.devices} but only "
                  f"{torch.cuda.device_count()} GPU(s) are visible")
        dist.launch(trainer.devices, worker, cfg, str(run_dir), overrides)
        report = json.loads((run_dir / "metrics.json").read_text())
    else:
        report = train(cfg, run_dir, overrides)
    if dist.launch_rank() == 0:
        print(summary_text(report, run_dir), flush=True)
    return report


def worker(cfg: dict[str, Any], run_dir: str, overrides: list[str]) -> None:
    """Entry point of each DDP worker process (module level so that spawn can pickle it)."""
    if os.environ.get("DLTRAIN_FAIL_RANK") == os.environ.get("RANK"):  # fault injection for the tests
        os._exit(3)
    train(cfg, Path(run_dir), overrides)


def summary_text(report: dict[str, Any], run_dir: Path) -> str:
    val = "  ".join(f"{k} {v:.4g}" for k, v in report["final"].items() if k.startswith("val/")) or "(no val split)"
    test = "  ".join(f"{k} {v:.4g}" for k, v in report["test"].items()) or "(no test split)"
    best = report["best"]
    best_text = f"{best:.4g} at epoch {report['best_epoch']}" if best is not None else "n/a"
    return (f"\nbest {report['monitor']} {best_text}\nfinal  {val}\ntest   {test}\n"
            f"epochs {report['epochs']}, stopped: {report['stop_reason']}\nrun dir {run_dir}")
