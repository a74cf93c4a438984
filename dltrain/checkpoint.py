"""Checkpoints: written atomically (temp file in the same folder, fsync, then rename), loaded safely
with torch.load(weights_only=True): tensors, numbers, strings, lists and dicts only; resuming a run from one.
"""
from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from dltrain import dist
from dltrain.engine import Callback, State, rng_state
from dltrain.files import write_atomic
from dltrain.optim import optimizer_class
from dltrain.registry import ConfigError, check, first_line

FORMAT = 3  # bump when the layout below changes (2: one RNG state per rank; 3: best and callbacks apart)


def save_atomic(obj: Any, path: Path) -> None:
    """A crash leaves either the old file or the new one, never half of one."""
    write_atomic(path, lambda handle: torch.save(obj, handle))


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
        raise ConfigError(f"no checkpoint at {path}; give a run directory that holds last.pt, or a .pt file")
    return path


def load(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = checkpoint_file(path)
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, not a checkpoint, or unsafe content
        raise ConfigError(f"{path} is not a readable dltrain checkpoint ({type(err).__name__}: "
                          f"{first_line(err, 200)})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or "model" not in saved:
        raise ConfigError(f"{path} is not a dltrain checkpoint of format {FORMAT}")
    return saved


def restore(state: State, saved: dict[str, Any]) -> None:
    """Continue from `saved`: weights, optimizer, scaler, progress counters and RNG states."""
    state.raw_model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if saved["scaler"] and state.scaler.is_enabled():  # a run may resume with another precision
        state.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.step = saved["epoch"], saved["step"]
    state.samples_seen, state.train_seconds = saved["samples_seen"], saved["train_seconds"]
    rng = saved["rng"][dist.rank()] if dist.rank() < len(saved["rng"]) else saved["rng"][0]
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"].cpu())


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the code being run, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def check_resumable(model: nn.Module, saved: dict[str, Any], optimizer: type[torch.optim.Optimizer],
                    max_epochs: int) -> None:
    """The checkpoint's weights must fit this config's model, its optimizer state this config's optimizer,
    and there must be epochs left to train."""
    check(saved["epoch"] < max_epochs, f"the run to resume already trained {saved['epoch']} epochs; set "
          f"trainer.max_epochs above {saved['epoch']} to continue it")
    their_optim = (yaml.safe_load(saved.get("config") or "{}") or {}).get("optim") or {}
    try:  # the checkpoint's optimizer class, from its own config (sgd and momentum are both SGD)
        theirs = optimizer_class(their_optim.get("name"))
    except ConfigError:
        theirs = optimizer  # an unreadable old config: torch's own load_state_dict checks remain
    check(theirs is optimizer, f"the checkpoint was trained with optim={their_optim.get('name')} "
          f"({theirs.__name__}), which cannot continue as {optimizer.__name__}; resume with "
          f"optim={their_optim.get('name')}")
    ours = model.state_dict()
    for key in sorted(set(ours) | set(saved["model"])):
        there, here = saved["model"].get(key), ours.get(key)
        if there is None or here is None or there.shape != here.shape:
            shape = lambda t: "absent" if t is None else tuple(t.shape)  # noqa: E731
            raise ConfigError(f"the checkpoint does not fit this model: {key} is {shape(there)} there but "
                              f"{shape(here)} here; resume with the run's own model settings")


def resume(state: State, callbacks: Sequence[Callback], where: str, max_epochs: int) -> None:
    """Continue a run from `where` (a run directory or .pt file): the loop's state, the best epoch (with best.pt's
    weights when restore_best) and every callback's state. Loaded on the CPU: load_state_dict moves weights and
    moments to the parameters' device but leaves the optimizers' `step` counters where they are, and Adam & co.
    read a CUDA `step` with .item() every step (a host sync)."""
    saved = load(where)
    check_resumable(state.raw_model, saved, type(state.optimizer), max_epochs)
    restore(state, saved)
    best_file = checkpoint_file(where).parent / "best.pt"
    device = next(state.raw_model.parameters()).device
    best_weights = load(best_file, device)["model"] if best_file.is_file() else None
    state.best.load_state_dict(saved["best"], best_weights)
    for cb in callbacks:
        cb.load_state_dict(saved["callbacks"].get(callback_key(cb), {}))
