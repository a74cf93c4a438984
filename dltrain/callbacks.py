"""Callbacks of the engine loop: early stopping, checkpoints, TensorBoard and console progress.

Each subclasses the `engine.Callback` protocol (no-op events by default); only rank 0 gets the writing ones.
The engine judges each epoch (`state.best`) before any callback runs, so their order does not matter.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from dltrain import checkpoint
from dltrain.engine import Callback, State


class EarlyStopping(Callback):
    """Stops the run when the monitored metric (`state.best`, judged by the engine) has not improved for
    `patience` epochs: Keras semantics plus Lightning's extras. Its counter survives a resume."""

    def __init__(self, enabled: bool = True, patience: int = 5, baseline: float | None = None,
                 stop_on_nonfinite: bool = True) -> None:
        self.enabled, self.patience, self.baseline, self.stop_on_nonfinite = enabled, patience, baseline, stop_on_nonfinite
        self.wait = 0  # epochs judged since the last improvement that beat the baseline

    def on_epoch_end(self, state: State) -> None:
        best = state.best
        if best.nonfinite:
            if self.stop_on_nonfinite:
                state.should_stop, state.stop_reason = True, f"non-finite {best.monitor} or train/loss at epoch {state.epoch}"
            return
        if state.epoch <= best.start_from_epoch:  # warm-up epochs are not judged (Keras' start_from_epoch)
            return
        # As Keras: the counter restarts only on an improvement that also beats the baseline.
        reached_baseline = self.baseline is None or best.better(state.metrics[best.monitor], self.baseline)
        self.wait = 0 if best.improved and reached_baseline else self.wait + 1
        if self.enabled and not best.improved and self.wait >= self.patience:
            state.should_stop = True
            state.stop_reason = (f"early stopping: {best.monitor} did not improve by more than {best.min_delta:g} "
                                 f"for {self.wait} epochs (best {best.value:.6g} at epoch {best.epoch})")

    def on_fit_start(self, state: State) -> None:
        """A resumed run that had already met its stopping rule (under the current patience) stays stopped."""
        best = state.best
        if self.enabled and best.value is not None and self.wait > 0 and self.wait >= self.patience:
            state.should_stop = True
            state.stop_reason = (f"early stopping (already met before resuming): {best.monitor} did not improve "
                                 f"for {self.wait} epochs (best {best.value:.6g} at epoch {best.epoch})")

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.wait = int(saved.get("wait", 0))


class Checkpointer(Callback):
    """Writes last.pt every epoch and best.pt on improvement, each atomically (temp file, then rename).
    A checkpoint holds the loop's state and the state of every callback in `callbacks`."""

    def __init__(self, run_dir: Path, extra: dict[str, Any], callbacks: Sequence[Callback], save_last: bool = True,
                 save_best: bool = True) -> None:
        self.run_dir, self.extra, self.callbacks = run_dir, extra, callbacks
        self.save_last, self.save_best = save_last, save_best

    def on_epoch_end(self, state: State) -> None:
        improved = self.save_best and state.best.improved
        if state.best.nonfinite or not (self.save_last or improved):
            return  # never overwrite last.pt with NaN weights
        payload = checkpoint.payload(state, self.callbacks, self.extra)
        if self.save_last:
            checkpoint.save_atomic(payload, self.run_dir / "last.pt")
        if improved:
            checkpoint.save_atomic(payload, self.run_dir / "best.pt")


class TensorBoard(Callback):
    """Scalars per epoch (x = epochs done), the running train loss per logged step, a grid of samples per epoch
    for generative models (`sample(n, generator)`), and at the end the test metrics plus an HParams summary,
    so a sweep's runs line up in TensorBoard's HParams table."""

    def __init__(self, run_dir: Path, hparams: dict[str, Any],
                 sample: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> None:
        self.run_dir, self.hparams, self.sample = run_dir, hparams, sample
        self.writer: Any = None

    def on_fit_start(self, state: State) -> None:
        """The event file is opened only now: a run rejected before fitting (a failed resume) writes nothing."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.run_dir))

    def on_train_log(self, state: State, values: dict[str, float]) -> None:
        self.writer.add_scalar("train/loss_step", values["train/loss"], state.step)

    def on_epoch_end(self, state: State) -> None:
        for tag, value in state.metrics.items():
            self.writer.add_scalar(tag, value, state.epoch)
        if self.sample is not None:
            device = next(state.raw_model.parameters()).device
            with torch.no_grad():
                samples = self.sample(64, torch.Generator(device).manual_seed(0)).float().cpu()
            if samples.dim() == 4 and samples.shape[1] in (1, 3):
                self.writer.add_image("samples", image_grid(samples), state.epoch)
        self.writer.flush()

    def on_fit_end(self, state: State) -> None:
        from torch.utils.tensorboard.summary import hparams

        summary = final_summary(state)
        for tag, value in summary.items():
            self.writer.add_scalar(tag, value, state.epoch)
        # As torch's add_hparams writes them (summary.hparams + file_writer.add_summary), but into this run's own
        # event file: add_hparams would open a second writer and event file (a sub-folder, or "." beside this one).
        for event in hparams(self.hparams, summary):
            self.writer.file_writer.add_summary(event, state.epoch)
        self.writer.close()


def image_grid(images: torch.Tensor, columns: int = 8) -> torch.Tensor:
    """(N, C, H, W) -> one (C, rows*H, columns*W) image scaled to [0, 1] (min-max over the batch)."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    padded = torch.cat([images, images.new_zeros(rows * columns - n, c, h, w)])
    grid = padded.reshape(rows, columns, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, columns * w)
    return (grid - grid.min()) / (grid.max() - grid.min()).clamp_min(1e-8)


def final_summary(state: State) -> dict[str, float]:
    """The HParams metrics: the same keys for every run of a task, so sweeps compare cleanly."""
    out = {f"final/{k}": v for k, v in state.metrics.items() if k.startswith(("val/", "train/"))}
    out.update(state.test_metrics)
    out["epochs"] = float(state.epoch)
    out[f"best/{state.best.monitor}"] = state.best.value if state.best.value is not None else math.nan
    return out


class Progress(Callback):
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
