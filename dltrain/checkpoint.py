"""Checkpoints: written atomically (temp file in the same folder, fsync, then rename), loaded safely
with torch.load(weights_only=True): tensors, numbers, strings, lists and dicts only.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from dltrain import dist
from dltrain.engine import State, rng_state
from dltrain.registry import ConfigError

FORMAT = 2  # bump when the layout below changes (2: one RNG state per rank)


def save_atomic(obj: Any, path: Path) -> None:
    """A crash leaves either the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def payload(state: State, stopper: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
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
        "early_stopping": stopper,
        "rng": state.rng or [rng_state()],  # one entry per rank
        **extra,
    }


def find(path: str | Path) -> Path:
    """A checkpoint file, or the last.pt of a run directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}; give a run directory that holds last.pt, or a .pt file")
    return path


def load(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = find(path)
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, not a checkpoint, or unsafe content
        detail = (str(err).strip().splitlines() or [""])[0][:200]  # some errors have no message (an empty file)
        raise ConfigError(f"{path} is not a readable dltrain checkpoint ({type(err).__name__}: {detail})") from None
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
