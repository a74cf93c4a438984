"""Resuming a run from its checkpoint (`trainer.resume=RUN`): the checks that it can go on with this config, then
the loop's state, the best epoch and every callback's state back. A run that trained all its epochs but was killed
before its test and metrics.json is only finished: the same metrics.json and TensorBoard curves as a run that was
never interrupted (its last epoch's metrics come from the checkpoint).

A run's last.pt is written before its best.pt (callbacks.Checkpointer), so a kill between the two leaves a last.pt
that is itself the best epoch and a best.pt one improvement behind: resume takes the best weights from last.pt then,
and the Checkpointer rewrites best.pt. Whatever the interruption, the resumed pair agrees.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from dltrain.core import dist, metrics_file
from dltrain.core.checkpoint import (
    callback_key,
    check_weights_fit,
    checkpoint_file,
    load,
    remove_orphans,
    served_weights,
    validate,
)
from dltrain.core.engine import Callback, State
from dltrain.core.optim import optimizer_class
from dltrain.core.registry import ConfigError, check, first_line
from dltrain.run.resume import settings_advice


def restore(state: State, saved: dict[str, Any]) -> None:
    """Continue from `saved`: weights, optimizer, scaler, progress counters and RNG states."""
    state.raw_model.load_state_dict(saved["model"])
    if state.ema is not None:  # its weights and its count of updates (the warm-up's step): check_ema said it has one
        state.ema.load_state_dict(saved["ema"])
    try:  # the parameter groups can differ with the same optimizer class (exclude_bias_and_norm, a GAN's nets)
        state.optimizer.load_state_dict(saved["optimizer"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise ConfigError(f"the checkpoint's optimizer state does not fit this optimizer ({first_line(err, 150)}); "
                          "resume with the run's own optim and model settings") from None
    if saved["scaler"] and state.scaler.is_enabled():  # a run may resume with another precision
        state.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.step = saved["epoch"], saved["step"]
    state.metrics = dict(saved.get("metrics", {}))  # the last epoch's, as a run that is only finished reports them
    state.samples_seen, state.train_seconds = saved["samples_seen"], saved["train_seconds"]
    state.rng = list(saved["rng"])  # every rank's, as saved: a best.pt rewritten before the next epoch keeps them
    rng = saved["rng"][dist.rank()] if dist.rank() < len(saved["rng"]) else saved["rng"][0]
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"].cpu())


def completed(run_dir: Path) -> bool:
    """The run's metrics.json says it completed (tested and reported); a killed run has none, or a failed one."""
    return metrics_file.read(run_dir).get("status") == metrics_file.COMPLETED


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
        theirs = optimizer_class(their_optim.get("name"), their_optim)  # a user's optimizer is built to learn it
    except ConfigError:
        theirs = optimizer  # an unreadable old config: torch's own load_state_dict checks remain
    check(theirs is optimizer, f"the checkpoint was trained with optim={their_optim.get('name')} "
          f"({theirs.__name__}), which cannot continue as {optimizer.__name__}; resume with "
          f"optim={their_optim.get('name')}")
    check_weights_fit(model, saved["model"], "the checkpoint does not fit this model",
                      settings_advice(saved, config or {}))


def open_resumable(where: str | Path) -> tuple[dict[str, Any], Path, bool]:
    """The checkpoint to resume from (validated), its path, and whether its run completed. A completed run's
    orphan temp files are removed here, even when the resume is then refused: all its writes have ended (a kill in
    its last one, metrics.json's rewrite, leaves one), so nothing will rename them. An unfinished run's wait for
    the resume to pass its checks (train.py), so that a refused one leaves its folder as it was."""
    path = checkpoint_file(where)
    saved = load(path)
    validate(saved, path)
    finished = completed(path.parent)
    if finished and dist.is_rank0():
        remove_orphans(path.parent)
    return saved, path, finished


def best_weights(saved: dict[str, Any], path: Path, device: torch.device) -> dict[str, torch.Tensor] | None:
    """The weights of the best epoch recorded in `saved`: its own when that is its epoch (best.pt may be stale or
    missing then: a kill between the writes of last.pt and best.pt), else best.pt's, which must hold that epoch."""
    epoch = saved["best"]["epoch"]
    if epoch == saved["epoch"]:
        return {key: value.to(device) for key, value in served_weights(saved).items()}
    best_file = path.parent / "best.pt"
    if epoch == 0 or not best_file.is_file():  # no best yet, or a run with checkpoints.save_best=false
        return None
    best = load(best_file, device)
    validate(best, best_file)
    check(best["epoch"] == epoch, f"{best_file} holds epoch {best['epoch']} but {path} names epoch {epoch} as the "
          f"best; the pair was not written by one run (resume from {best_file} itself, or delete it to resume "
          "without the best weights)")
    return served_weights(best)  # the EMA's, in a run that keeps one: what the best epoch was judged on


def check_ema(state: State, saved: dict[str, Any]) -> None:
    """trainer.ema cannot be switched on or off by a resume: the best epoch was judged on one kind of weights (the
    averaged or the trained) and must go on so. A changed decay continues (like a changed learning rate)."""
    theirs = saved.get("ema")
    if state.ema is not None and theirs is None:
        raise ConfigError(f"the checkpoint has no EMA weights (its run had trainer.ema.decay=null), so it cannot "
                          f"continue with trainer.ema.decay={state.ema.decay}; resume with trainer.ema.decay=null")
    if state.ema is None and theirs is not None:
        raise ConfigError(f"the checkpoint keeps EMA weights (its run had trainer.ema.decay={theirs.get('decay')}) and "
                          f"its best epoch was judged on them; resume with trainer.ema.decay={theirs.get('decay')}")


def resume(state: State, callbacks: Sequence[Callback], where: str, max_epochs: int,
           config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Continue a run from `where` (a run directory or .pt file): the loop's state, the best epoch (with its weights
    when restore_best) and every callback's state; returns the checkpoint's config. Loaded on the CPU:
    load_state_dict moves weights and moments to the parameters' device but leaves the optimizers' `step` counters
    where they are, and Adam & co. read a CUDA `step` with .item() every step (a host sync)."""
    saved, path, finished = open_resumable(where)
    check_resumable(state.raw_model, saved, type(state.optimizer), max_epochs, finished, config)
    check_ema(state, saved)
    device = next(state.raw_model.parameters()).device
    same_monitor = (saved["best"]["monitor"], saved["best"]["mode"]) == (state.best.monitor, state.best.mode)
    weights = best_weights(saved, path, device) if same_monitor else None  # before restore: it may refuse
    restore(state, saved)
    state.best.load_state_dict(saved["best"], weights)
    for cb in callbacks:
        cb.load_state_dict(saved["callbacks"].get(callback_key(cb), {}))
    return yaml.safe_load(saved["config"])
