"""Callbacks of the engine loop: early stopping, checkpoints, TensorBoard and console progress.

Each is a plain class with the events of `engine.Callback`; only rank 0 gets the writing ones.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch

from dltrain import checkpoint
from dltrain.engine import State


class Base:
    """No-op events, so each callback writes only the ones it needs (a mixin, not a hierarchy)."""

    def on_fit_start(self, state: State) -> None: ...
    def on_train_log(self, state: State, values: dict[str, float]) -> None: ...
    def on_epoch_end(self, state: State) -> None: ...
    def on_train_end(self, state: State) -> None: ...
    def on_fit_end(self, state: State) -> None: ...


class EarlyStopping(Base):
    """Keras semantics plus Lightning's extras. It always tracks the best epoch (for best.pt and
    metrics.json); it stops the run only when `enabled`. Its state is saved in every checkpoint."""

    def __init__(self, monitor: str = "val/loss", mode: str = "min", patience: int = 5, min_delta: float = 0.0,
                 baseline: float | None = None, start_from_epoch: int = 0, restore_best: bool = True,
                 stop_on_nonfinite: bool = True, enabled: bool = True) -> None:
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, abs(min_delta)
        self.baseline, self.start_from_epoch, self.restore_best = baseline, start_from_epoch, restore_best
        self.stop_on_nonfinite, self.enabled = stop_on_nonfinite, enabled
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0  # epochs since the last improvement
        self.improved = False  # whether the epoch just ended was the best so far
        self.nonfinite = False  # whether the epoch just ended has a NaN/inf loss or monitored value
        self.best_weights: dict[str, torch.Tensor] | None = None

    def better(self, value: float, reference: float) -> bool:
        return value < reference - self.min_delta if self.mode == "min" else value > reference + self.min_delta

    def on_epoch_end(self, state: State) -> None:
        value = state.metrics.get(self.monitor, math.nan)
        self.improved = False
        self.nonfinite = not all(math.isfinite(v) for v in (value, state.metrics.get("train/loss", 0.0)))
        if self.stop_on_nonfinite and self.nonfinite:
            state.should_stop, state.stop_reason = True, f"non-finite {self.monitor} or train/loss at epoch {state.epoch}"
            return
        if state.epoch <= self.start_from_epoch:  # warm-up epochs are not judged (Keras' start_from_epoch)
            return
        if self.best is None or self.better(value, self.best):
            self.best, self.best_epoch, self.improved = value, state.epoch, True
            if self.restore_best:  # a copy on the device: no host transfer per improvement
                self.best_weights = {k: v.detach().clone() for k, v in state.raw_model.state_dict().items()}
        # As Keras: the counter restarts only on an improvement that also beats the baseline.
        reached_baseline = self.baseline is None or self.better(value, self.baseline)
        self.wait = 0 if self.improved and reached_baseline else self.wait + 1
        if self.enabled and not self.improved and self.wait >= self.patience:
            state.should_stop = True
            state.stop_reason = (f"early stopping: {self.monitor} did not improve by more than {self.min_delta:g} "
                                 f"for {self.wait} epochs (best {self.best:.6g} at epoch {self.best_epoch})")

    def on_train_end(self, state: State) -> None:
        if self.restore_best and self.best_weights is not None and self.best_epoch != state.epoch:
            state.raw_model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "monitor": self.monitor,
                "mode": self.mode}

    def load_state_dict(self, saved: dict[str, Any], best_weights: dict[str, torch.Tensor] | None) -> None:
        if (saved.get("monitor"), saved.get("mode")) != (self.monitor, self.mode):
            return  # another monitored metric: its best starts afresh
        self.best, self.best_epoch, self.wait = saved["best"], saved["best_epoch"], saved["wait"]
        self.best_weights = best_weights if self.restore_best else None

    def on_fit_start(self, state: State) -> None:
        """A resumed run that had already met its stopping rule (under the current patience) stays stopped."""
        if self.enabled and self.best is not None and self.wait > 0 and self.wait >= self.patience:
            state.should_stop = True
            state.stop_reason = (f"early stopping (already met before resuming): {self.monitor} did not improve "
                                 f"for {self.wait} epochs (best {self.best:.6g} at epoch {self.best_epoch})")


class Checkpointer(Base):
    """Writes last.pt every epoch and best.pt on improvement, each atomically (temp file, then rename)."""

    def __init__(self, run_dir: Path, stopper: EarlyStopping, extra: dict[str, Any], save_last: bool = True,
                 save_best: bool = True) -> None:
        self.run_dir, self.stopper, self.extra = run_dir, stopper, extra
        self.save_last, self.save_best = save_last, save_best

    def on_epoch_end(self, state: State) -> None:
        if self.stopper.nonfinite or not (self.save_last or (self.save_best and self.stopper.improved)):
            return  # never overwrite last.pt with NaN weights
        payload = checkpoint.payload(state, self.stopper.state_dict(), self.extra)
        if self.save_last:
            checkpoint.save_atomic(payload, self.run_dir / "last.pt")
        if self.save_best and self.stopper.improved:
            checkpoint.save_atomic(payload, self.run_dir / "best.pt")


class TensorBoard(Base):
    """Scalars per epoch (x = epochs done), the running train loss per logged step, and at the end the test
    metrics plus an HParams summary, so a sweep's runs line up in TensorBoard's HParams table."""

    def __init__(self, run_dir: Path, hparams: dict[str, Any], stopper: EarlyStopping) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.hparams, self.stopper = hparams, stopper

    def on_train_log(self, state: State, values: dict[str, float]) -> None:
        self.writer.add_scalar("train/loss_step", values["train/loss"], state.step)

    def on_epoch_end(self, state: State) -> None:
        for tag, value in state.metrics.items():
            self.writer.add_scalar(tag, value, state.epoch)
        if hasattr(state.raw_model, "sample"):  # generative models: a grid of samples per epoch
            with torch.no_grad():
                samples = state.raw_model.sample(64, torch.Generator(next(state.raw_model.parameters()).device)
                                                 .manual_seed(0)).float().cpu()
            if samples.dim() == 4 and samples.shape[1] in (1, 3):
                self.writer.add_image("samples", image_grid(samples), state.epoch)
        self.writer.flush()

    def on_fit_end(self, state: State) -> None:
        from torch.utils.tensorboard.summary import hparams

        summary = final_summary(state, self.stopper)
        for tag, value in summary.items():
            self.writer.add_scalar(tag, value, state.epoch)
        for event in hparams(self.hparams, summary):  # into this run, not a sub-folder as add_hparams does
            self.writer.file_writer.add_summary(event)
        self.writer.close()


def image_grid(images: torch.Tensor, columns: int = 8) -> torch.Tensor:
    """(N, C, H, W) -> one (C, rows*H, columns*W) image scaled to [0, 1] (min-max over the batch)."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    padded = torch.cat([images, images.new_zeros(rows * columns - n, c, h, w)])
    grid = padded.reshape(rows, columns, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, columns * w)
    return (grid - grid.min()) / (grid.max() - grid.min()).clamp_min(1e-8)


def final_summary(state: State, stopper: EarlyStopping) -> dict[str, float]:
    """The HParams metrics: the same keys for every run of a task, so sweeps compare cleanly."""
    out = {f"final/{k}": v for k, v in state.metrics.items() if k.startswith(("val/", "train/"))}
    out.update(state.final)
    out["epochs"] = float(state.epoch)
    out[f"best/{stopper.monitor}"] = stopper.best if stopper.best is not None else math.nan
    return out


class Progress(Base):
    """A live line on a terminal; one plain line per epoch otherwise (no flood in log files)."""

    def __init__(self, max_epochs: int, stream: Any = None) -> None:
        self.max_epochs, self.stream = max_epochs, stream or sys.stdout
        self.tty = self.stream.isatty()

    def on_train_log(self, state: State, values: dict[str, float]) -> None:
        if self.tty:
            self.stream.write(f"\repoch {state.epoch + 1}/{self.max_epochs} step {state.step} "
                              f"train/loss {values['train/loss']:.4f}")
            self.stream.flush()

    def on_epoch_end(self, state: State) -> None:
        shown = {k: v for k, v in state.metrics.items() if k.startswith(("train/", "val/", "lr"))}
        text = "  ".join(f"{k} {v:.4g}" for k, v in shown.items())
        clear = "\r\033[K" if self.tty else ""
        print(f"{clear}epoch {state.epoch}/{self.max_epochs}  {text}  ({state.metrics['time/epoch_sec']:.2f}s)",
              file=self.stream, flush=True)
