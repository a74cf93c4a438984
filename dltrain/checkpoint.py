"""Checkpoints: written atomically (temp file in the same folder, fsync, then rename), loaded safely with
torch.load(weights_only=True): tensors, numbers, strings, lists and dicts only; checked entry by entry (`validate`)
before anything uses them; resuming a run from one.

A run's last.pt is written before its best.pt (callbacks.Checkpointer), so a kill between the two leaves a last.pt
that is itself the best epoch and a best.pt one improvement behind: resume takes the best weights from last.pt then,
and the Checkpointer rewrites best.pt. Whatever the interruption, the resumed pair agrees.
"""
from __future__ import annotations

import json
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

from dltrain import dist
from dltrain.engine import Callback, State, rng_state
from dltrain.files import looked_in, starts_with, write_atomic
from dltrain.optim import optimizer_class
from dltrain.registry import ConfigError, check, first_line

FORMAT = 3  # bump when the layout below changes (2: one RNG state per rank; 3: best and callbacks apart)
RUN_FILES = ("last.pt", "best.pt", "config.yaml", "metrics.json")  # what files.write_atomic writes in a run dir


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
    """What a checkpoint holds; `extra` carries the resolved config (YAML text) and the git commit."""
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
        "callbacks": {callback_key(cb): cb.state_dict() for cb in callbacks},
        "rng": state.rng or [rng_state()],  # one entry per rank
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
    seconds = saved.get("train_seconds")
    check(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds),
          f"{path}: train_seconds={seconds!r} is not a finite number{damaged}")
    best = saved.get("best")
    check(isinstance(best, dict) and isinstance(best.get("monitor"), str) and best.get("mode") in ("min", "max")
          and type(best.get("epoch")) is int and 0 <= best["epoch"] <= saved["epoch"]
          and (best.get("value") is None or isinstance(best["value"], (int, float))),
          f"{path}: its best-epoch record {best!r} is malformed (want monitor, mode min|max, value, and an epoch "
          f"between 0 and epoch={saved['epoch']}){damaged}")


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


def restore(state: State, saved: dict[str, Any]) -> None:
    """Continue from `saved`: weights, optimizer, scaler, progress counters and RNG states."""
    state.raw_model.load_state_dict(saved["model"])
    try:  # the parameter groups can differ with the same optimizer class (exclude_bias_and_norm, a GAN's nets)
        state.optimizer.load_state_dict(saved["optimizer"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise ConfigError(f"the checkpoint's optimizer state does not fit this optimizer ({first_line(err, 150)}); "
                          "resume with the run's own optim and model settings") from None
    if saved["scaler"] and state.scaler.is_enabled():  # a run may resume with another precision
        state.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.step = saved["epoch"], saved["step"]
    state.samples_seen, state.train_seconds = saved["samples_seen"], saved["train_seconds"]
    state.rng = list(saved["rng"])  # every rank's, as saved: a best.pt rewritten before the next epoch keeps them
    rng = saved["rng"][dist.rank()] if dist.rank() < len(saved["rng"]) else saved["rng"][0]
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"].cpu())


def completed(run_dir: Path) -> bool:
    """The run's metrics.json says it completed (tested and reported); a killed run has none, or a failed one."""
    try:
        report = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and report.get("status") == "completed"


def check_resumable(model: nn.Module, saved: dict[str, Any], optimizer: type[torch.optim.Optimizer],
                    max_epochs: int, finished: bool = True, config: dict[str, Any] | None = None) -> None:
    """The checkpoint's weights must fit this config's model, its optimizer state this config's optimizer, and
    there must be epochs left to train, or, for a run that trained all its epochs but was not `finished`
    (killed before its test and metrics.json), exactly max_epochs: resuming it then only finishes it."""
    epoch = saved["epoch"]
    if epoch >= max_epochs:
        to_finish = "" if finished else f", or set trainer.max_epochs={epoch} to finish it (test and metrics.json)"
        check(epoch == max_epochs and not finished, f"the run to resume already trained {epoch} epochs; set "
              f"trainer.max_epochs above {epoch} to continue it{to_finish}")
    their_optim = (yaml.safe_load(saved.get("config") or "{}") or {}).get("optim") or {}
    try:  # the checkpoint's optimizer class, from its own config (sgd and momentum are both SGD)
        theirs = optimizer_class(their_optim.get("name"))
    except ConfigError:
        theirs = optimizer  # an unreadable old config: torch's own load_state_dict checks remain
    check(theirs is optimizer, f"the checkpoint was trained with optim={their_optim.get('name')} "
          f"({theirs.__name__}), which cannot continue as {optimizer.__name__}; resume with "
          f"optim={their_optim.get('name')}")
    check_weights_fit(model, saved["model"], "the checkpoint does not fit this model",
                      settings_advice(saved, config or {}))


def settings_advice(saved: dict[str, Any], config: dict[str, Any]) -> str:
    """What a resume that lacks the run's original model/data/task overrides must add: each key whose value in the
    checkpoint's config differs from this `config`'s, as an override (a shape mismatch alone does not say which)."""
    def flat(tree: Any, at: str) -> dict[str, Any]:
        return {k: v for n, sub in tree.items() for k, v in flat(sub, f"{at}.{n}").items()} if isinstance(tree, dict) \
            else {at: tree if isinstance(tree, str) else json.dumps(tree, separators=(",", ":"))}

    theirs, differ = yaml.safe_load(saved.get("config") or "{}") or {}, []
    for group in ("model", "data", "task"):
        old, new = flat(theirs.get(group, {}), group), flat(config.get(group, {}), group)
        differ += [f"{key}={old[key]} (here {new.get(key, 'absent')})" for key in sorted(old) if old[key] != new.get(key)]
    if not differ:
        return "resume with the run's own model settings"
    return f"the run was trained with {', '.join(differ)}: add those overrides to the resume command"


def open_resumable(where: str | Path) -> tuple[dict[str, Any], Path, bool]:
    """The checkpoint to resume from (validated), its path, and whether its run completed. A completed run's
    orphan temp files are removed here, even when the resume is then refused: all its writes have ended (a kill in
    its last one, metrics.json's rewrite, leaves one), so nothing will rename them. An unfinished run's wait for
    the resume to pass its checks (train.py), so that a refused one leaves its folder as it was."""
    path = checkpoint_file(where)
    saved = load(path)
    validate(saved, path)
    finished = completed(path.parent)
    if finished and dist.is_main():
        remove_orphans(path.parent)
    return saved, path, finished


def best_weights(saved: dict[str, Any], path: Path, device: torch.device) -> dict[str, torch.Tensor] | None:
    """The weights of the best epoch recorded in `saved`: its own when that is its epoch (best.pt may be stale or
    missing then: a kill between the writes of last.pt and best.pt), else best.pt's, which must hold that epoch."""
    epoch = saved["best"]["epoch"]
    if epoch == saved["epoch"]:
        return {key: value.to(device) for key, value in saved["model"].items()}
    best_file = path.parent / "best.pt"
    if epoch == 0 or not best_file.is_file():  # no best yet, or a run with checkpoints.save_best=false
        return None
    best = load(best_file, device)
    validate(best, best_file)
    check(best["epoch"] == epoch, f"{best_file} holds epoch {best['epoch']} but {path} names epoch {epoch} as the "
          f"best; the pair was not written by one run (resume from {best_file} itself, or delete it to resume "
          "without the best weights)")
    return best["model"]


def resume(state: State, callbacks: Sequence[Callback], where: str, max_epochs: int,
           config: dict[str, Any] | None = None) -> None:
    """Continue a run from `where` (a run directory or .pt file): the loop's state, the best epoch (with its weights
    when restore_best) and every callback's state. Loaded on the CPU: load_state_dict moves weights and moments to
    the parameters' device but leaves the optimizers' `step` counters where they are, and Adam & co. read a CUDA
    `step` with .item() every step (a host sync)."""
    saved, path, finished = open_resumable(where)
    check_resumable(state.raw_model, saved, type(state.optimizer), max_epochs, finished, config)
    device = next(state.raw_model.parameters()).device
    same_monitor = (saved["best"]["monitor"], saved["best"]["mode"]) == (state.best.monitor, state.best.mode)
    weights = best_weights(saved, path, device) if same_monitor else None  # before restore: it may refuse
    restore(state, saved)
    state.best.load_state_dict(saved["best"], weights)
    for cb in callbacks:
        cb.load_state_dict(saved["callbacks"].get(callback_key(cb), {}))


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
