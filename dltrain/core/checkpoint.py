"""Checkpoints: written atomically (temp file in the same folder, fsync, then rename), loaded safely with
torch.load(weights_only=True): tensors, numbers, strings, lists and dicts only; checked entry by entry (`validate`)
before anything uses them. Resuming a run from one is dltrain/resuming.py's.
"""
from __future__ import annotations

import math
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from torch import nn

from dltrain.core import metrics_file
from dltrain.core.engine import Callback, State, rng_state
from dltrain.core.files import looked_in, starts_with, write_atomic
from dltrain.core.registry import ConfigError, check, first_line

FORMAT = 3  # bump when the layout below changes (2: one RNG state per rank; 3: best and callbacks apart)
RUN_FILES = ("last.pt", "best.pt", "config.yaml", "resume.yaml", metrics_file.NAME)  # write_atomic writes them


def save_atomic(obj: Any, path: Path) -> None:
    """A crash leaves the old file or the new one, never half of one. torch.save reports any failure amid its writes
    as RuntimeError ("unexpected pos ..."): the real cause (a full disk's OSError, a signal's interrupt) is raised."""
    def save(handle: Any) -> None:
        failed: list[OSError] = []

        def write(data: Any) -> int:
            try:
                return handle.write(data)
            except OSError as err:
                failed.append(err)
                raise

        try:
            torch.save(obj, SimpleNamespace(write=write, flush=handle.flush))
        except RuntimeError as err:
            cause = failed[0] if failed else err.__context__
            if isinstance(cause, (OSError, KeyboardInterrupt)):
                raise cause from None
            raise

    write_atomic(path, save)


def callback_key(callback: Callback) -> str:
    return type(callback).__name__


def payload(state: State, callbacks: Sequence[Callback], extra: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint holds; `extra` carries the resolved config (YAML text) and the run's origin (git commit,
    provenance: plugins.run_origin, computed once per run)."""
    return {
        "format": FORMAT,
        "model": state.raw_model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(),
        "epoch": state.epoch,  # epochs completed; the schedule is a pure function of this or of step
        "step": state.step,
        "samples_seen": state.samples_seen,
        "train_seconds": state.train_seconds,
        "best": state.best.state_dict(),
        "metrics": dict(state.metrics),  # the epoch's: a resume that only finishes the run reports them (metrics.json)
        "callbacks": {callback_key(cb): cb.state_dict() for cb in callbacks},
        "rng": state.rng or [rng_state()],  # one entry per rank
        "threads": torch.get_num_threads(),  # what the run trains with: a resume keeps it (threads.py)
        **({"ema": state.ema.state_dict()} if state.ema is not None else {}),  # trainer.ema: weights, updates
        **extra,
    }


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file, or the last.pt of a run directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}{looked_in(path)}; give a run folder with last.pt, or a .pt file")
    return path


def load(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = checkpoint_file(path)
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if refused:  # torch's advice to load it unsafely is not ours to repeat
            raise ConfigError(f"{path} is not a dltrain checkpoint: it holds a Python object ({refused.group(1)}) "
                              "that a safe load refuses; dltrain never runs code from a file") from None
        raise ConfigError(f"{path} is not a readable dltrain checkpoint (UnpicklingError: {first_line(err, 120)})")
    except Exception as err:  # truncated, or not a checkpoint at all (torch.save writes a zip archive: PK...)
        what = "truncated or damaged" if starts_with(path, b"PK\x03\x04") else "not a file that torch.save wrote"
        raise ConfigError(f"{path} is not a readable dltrain checkpoint: it is {what} ({type(err).__name__}: "
                          f"{first_line(err, 80)}); give a run folder that holds last.pt, or its last.pt or best.pt")
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or "model" not in saved:
        raise ConfigError(f"{path} is not a dltrain checkpoint of format {FORMAT}")
    return saved


def validate(saved: dict[str, Any], path: Path) -> dict[str, Any]:
    """Every entry a command reads, checked before any is used, so a damaged or edited file is one line that names
    it instead of a traceback mid-way; returns the embedded config (a mapping)."""
    damaged = "; the file is damaged or was edited: use another checkpoint of the run"
    config = saved.get("config")
    check(isinstance(config, str), f"{path} has no embedded config (YAML text){damaged}")
    try:
        parsed = yaml.safe_load(config)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: its embedded config is not valid YAML ({first_line(err, 120)}){damaged}") from None
    check(isinstance(parsed, dict), f"{path}: its embedded config is not a mapping of config groups "
          f"(got {type(parsed).__name__}){damaged}")
    model = saved["model"]
    check(isinstance(model, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()),
          f"{path}: its weights are not a mapping of names to tensors{damaged}")
    bad = next((k for k, v in model.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    check(bad is None, f"{path} holds non-finite weights (NaN or inf in {bad}); use a checkpoint of an earlier "
          "epoch or train again with a smaller optim.lr")
    validate_counters(saved, path, damaged)
    validate_ema(saved, path, damaged)
    rng = saved.get("rng")
    size = torch.get_rng_state().numel()
    check(isinstance(rng, list) and len(rng) > 0 and all(rng_ok(entry, size) for entry in rng),
          f"{path}: its RNG state is malformed (want a list of {{'torch': uint8 tensor of {size}}} per rank){damaged}")
    for key in ("optimizer", "scaler", "callbacks"):
        check(isinstance(saved.get(key), dict), f"{path}: its {key} state is not a mapping{damaged}")
    return parsed


def validate_counters(saved: dict[str, Any], path: Path, damaged: str) -> None:
    """The progress counters and the best epoch: whole numbers (a bool is not one), the best within the run."""
    for key in ("epoch", "step", "samples_seen"):
        value = saved.get(key)
        check(type(value) is int and value >= 0, f"{path}: {key}={value!r} is not a count (an integer >= 0){damaged}")
    metrics = saved.get("metrics", {})  # absent from checkpoints of an older dltrain
    check(isinstance(metrics, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(
        v, bool) for k, v in metrics.items()), f"{path}: its metrics are not a mapping of names to numbers{damaged}")
    seconds = saved.get("train_seconds")
    check(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds),
          f"{path}: train_seconds={seconds!r} is not a finite number{damaged}")
    best = saved.get("best")
    check(isinstance(best, dict) and isinstance(best.get("monitor"), str) and best.get("mode") in ("min", "max")
          and type(best.get("epoch")) is int and 0 <= best["epoch"] <= saved["epoch"]
          and (best.get("value") is None or isinstance(best["value"], (int, float))),
          f"{path}: its best-epoch record {best!r} is malformed (want monitor, mode min|max, value, and an epoch "
          f"between 0 and epoch={saved['epoch']}){damaged}")


def validate_ema(saved: dict[str, Any], path: Path, damaged: str) -> None:
    """A run with trainer.ema keeps its averaged weights beside the trained ones: the same names and shapes, finite,
    and the count of updates (optimizer steps) averaged in."""
    ema = saved.get("ema")
    if ema is None:  # trained without EMA, or by an older dltrain
        return
    weights = ema.get("weights") if isinstance(ema, dict) else None
    check(isinstance(weights, dict) and type(ema.get("updates")) is int and ema["updates"] >= 0,
          f"{path}: its EMA state is malformed (want weights and a count of updates){damaged}")
    model = saved["model"]
    check(set(weights) == set(model) and all(isinstance(weights[k], torch.Tensor) and weights[k].shape == v.shape
                                             for k, v in model.items()),
          f"{path}: its EMA weights do not match its model's names and shapes{damaged}")
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    check(bad is None, f"{path} holds non-finite EMA weights (NaN or inf in {bad}); use a checkpoint of an earlier "
          "epoch or train again with a smaller optim.lr")


def served_weights(saved: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint's run is used with (its best epoch, eval, export, predict): the EMA's averaged ones
    when the run kept them (trainer.ema), else the trained ones. `model` always holds the trained weights, from which
    a resume continues; a checkpoint without `ema` (no EMA, an older dltrain) serves `model`, as before."""
    ema = saved.get("ema")
    return ema["weights"] if isinstance(ema, dict) else saved["model"]


def rng_ok(entry: Any, size: int) -> bool:
    """One rank's RNG state as rng_state() saves it: torch.set_rng_state takes nothing else."""
    if not isinstance(entry, dict) or not isinstance(entry.get("torch"), torch.Tensor):
        return False
    cpu, cuda = entry["torch"], entry.get("cuda")
    return (cpu.dtype == torch.uint8 and cpu.shape == (size,)
            and (cuda is None or isinstance(cuda, torch.Tensor) and cuda.dtype == torch.uint8 and cuda.dim() == 1))


def check_weights_fit(model: nn.Module, weights: dict[str, torch.Tensor], subject: str, advice: str) -> None:
    """Every tensor of `weights` has the name and shape of one of the model's: load_state_dict's own error is a
    multi-line traceback."""
    ours = model.state_dict()
    for key in sorted(set(ours) | set(weights)):
        there, here = weights.get(key), ours.get(key)
        if there is None or here is None or there.shape != here.shape:
            shape = lambda t: "absent" if t is None else tuple(t.shape)  # noqa: E731
            raise ConfigError(f"{subject}: {key} is {shape(there)} there but {shape(here)} here; {advice}")


def saved_epoch(path: Path) -> int | None:
    """The epoch a checkpoint file holds (memory-mapped: only that is read), or None when there is none."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (missing, truncated, foreign: it holds no usable epoch)
        return None
    return saved.get("epoch") if isinstance(saved, dict) else None


def remove_orphans(run_dir: Path) -> list[Path]:
    """Temp files of atomic writes that a kill interrupted (`.last.pt.<random>.tmp`, ...): nothing reads them."""
    orphans = [p for name in RUN_FILES for p in run_dir.glob(f".{name}.*.tmp") if p.is_file()]
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans
