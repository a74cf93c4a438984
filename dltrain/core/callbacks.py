"""Callbacks of the engine loop: early stopping, checkpoints, TensorBoard and console progress.

Each subclasses the `engine.Callback` protocol (no-op events by default); only rank 0 gets the writing ones.
The engine judges each epoch (`state.best`) before any callback runs, so their order does not matter.
The built-ins are registered in CALLBACKS like a user's callback and built the same way (run/assemble.py): their
YAML options (from their own config keys, `builtin` below) as keyword arguments, the run-time-only ones (RUNTIME)
from the caller. They are always on: the user's `callbacks` mapping cannot name them.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from dltrain.core import checkpoint
from dltrain.core.engine import Best, Callback, State
from dltrain.core.registry import Registry
from dltrain.core.tags import STEP_LOSS, best_tag, board_tag

# Arguments a callback's __init__ may take that the run gives, never YAML: its folder, its epochs, its HParams,
# a generative model's `sample`, what a checkpoint carries besides the state, and the callbacks built before it.
RUNTIME = ("run_dir", "max_epochs", "hparams", "sample", "extra", "callbacks")
# Callbacks by name: users' (dltrain.register_callback) and the built-ins, whose traits say where their YAML options
# are (`builtin`: a config key, None when there are none) and that only rank 0 runs them (`main_only`: they write).
CALLBACKS = Registry("callback", runtime=RUNTIME)


@CALLBACKS.register("early_stopping", builtin="early_stopping")  # on every rank: they stop together
class EarlyStopping(Callback):
    """Stops the run when the monitored metric (`state.best`, judged by the engine) has not improved for
    `patience` epochs: Keras semantics plus Lightning's extras. Its counter survives a resume."""

    def __init__(self, enabled: bool = True, patience: int = 5, baseline: float | None = None,
                 stop_on_nonfinite: bool = True) -> None:
        self.enabled, self.patience, self.baseline, self.stop_on_nonfinite = enabled, patience, baseline, stop_on_nonfinite
        self.wait = 0  # epochs judged since the last improvement that beat the baseline
        self.reason = ""  # why it stopped the run, once it has: a resume that only finishes the run says the same

    def on_epoch_end(self, state: State) -> None:
        best = state.best
        if best.nonfinite and self.stop_on_nonfinite:
            state.should_stop, state.stop_reason = True, f"non-finite {best.monitor} or train/loss at epoch {state.epoch}"
            return
        if state.epoch <= best.start_from_epoch:  # warm-up epochs are not judged (Keras' start_from_epoch)
            return
        # As Keras: the counter restarts only on an improvement that also beats the baseline. A NaN/inf epoch
        # (kept going by stop_on_nonfinite=false) did not improve: it counts, or a diverged run never stops.
        reached_baseline = self.baseline is None or best.better(state.metrics[best.monitor], self.baseline)
        self.wait = 0 if best.improved and reached_baseline else self.wait + 1
        if self.enabled and not best.improved and self.wait >= self.patience:
            state.should_stop = True
            self.reason = (f"early stopping: {best.monitor} did not improve by more than {best.min_delta:g} "
                           f"for {self.wait} epochs ({best_so_far(best)})")
            state.stop_reason = self.reason

    def on_fit_start(self, state: State) -> None:
        """A resumed run that had already met its stopping rule (under the current patience) stays stopped."""
        best = state.best
        if not (self.enabled and self.wait > 0 and self.wait >= self.patience):
            self.reason = ""  # it goes on (a larger patience): a reason it saved no longer holds
            return
        state.should_stop = True
        state.stop_reason = self.reason or (f"early stopping (already met before resuming): {best.monitor} did "
                                            f"not improve for {self.wait} epochs ({best_so_far(best)})")

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "reason": self.reason}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.wait, self.reason = int(saved.get("wait", 0)), str(saved.get("reason", ""))


def best_so_far(best: Best) -> str:
    """The best epoch in words; a run whose every judged epoch was NaN/inf has none."""
    if best.value is None:
        return f"no finite {best.monitor} yet"
    return f"best {best.value:.6g} at epoch {best.epoch}"


@CALLBACKS.register("checkpoints", builtin="trainer.ckpt", main_only=True)
class Checkpointer(Callback):
    """Writes last.pt every epoch and best.pt on improvement, each atomically (temp file, then rename).
    A checkpoint holds the loop's state and the state of every callback in `callbacks`.

    last.pt goes first: a kill between the two writes then leaves a last.pt that holds the best epoch itself, from
    which a resumed run rewrites best.pt (`on_fit_start`). The other order would leave a best.pt one epoch ahead
    of a last.pt that names an earlier best, whose weights the kill had already overwritten."""

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

    def on_fit_start(self, state: State) -> None:
        """A resumed run whose last epoch is its best was killed, maybe, before that epoch's best.pt was written."""
        best_file = self.run_dir / "best.pt"
        if (self.save_best and state.epoch > 0 and state.best.epoch == state.epoch
                and checkpoint.saved_epoch(best_file) != state.epoch):
            checkpoint.save_atomic(checkpoint.payload(state, self.callbacks, self.extra), best_file)


@CALLBACKS.register("tensorboard", builtin=None, main_only=True)
class TensorBoard(Callback):
    """Curves per epoch (x = epochs done), named for the screen TensorBoard opens on (dltrain/tags.py): the epoch's
    train/val metrics, `train/*` and `val/*`, with the monitored metric's running best `<monitor>_best` beside the
    monitor's own curve (its last value is the run's best); under `z_more/`, collapsed, the lr, epoch seconds,
    throughput, the running train loss per logged step, and the test metrics at the end. A grid of samples per
    epoch for generative models (`sample(n, generator)`). The run's hyper-parameters go in as an HParams session
    when fitting starts (tensorboard's own `summary_v2.hparams_pb`), so the HParams tab lists a sweep's runs while
    they train; in a sweep the run's folder also gets the sweep's experiment (domains, the swept keys, the metric
    columns; dltrain/core/hparams.py). One-point summaries (best, epochs, final values) are HParams columns and
    metrics.json fields, not scalar tags."""

    def __init__(self, run_dir: Path, hparams: dict[str, Any],
                 sample: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> None:
        self.run_dir, self.hparams, self.sample = run_dir, hparams, sample
        self.writer: Any = None

    def on_fit_start(self, state: State) -> None:
        """The event file is opened only now: a run rejected before fitting (a failed resume) writes nothing. Values
        an interrupted attempt logged past the checkpoint this run starts from are dropped first."""
        from torch.utils.tensorboard import SummaryWriter

        from dltrain.core.event_files import keep_until, open_after_existing
        from dltrain.core.hparams import join_sweep, session

        keep_until(self.run_dir, state.epoch, state.step)
        quiet_writer_thread()
        join_sweep(self.run_dir)
        open_after_existing(self.run_dir)
        self.writer = SummaryWriter(log_dir=str(self.run_dir))
        # The session is the run; its group (the HParams table's Trial ID, by which its rows are sorted) is the job's
        # name, e.g. `optim=adam,sched=step`, not TensorBoard's default hash of the values. A resumed run writes it
        # again, which TensorBoard ignores.
        self.writer.file_writer.add_summary(session(self.hparams, self.run_dir))

    def on_train_log(self, state: State, values: dict[str, float]) -> None:
        self.writer.add_scalar(STEP_LOSS, values["train/loss"], state.step)

    def on_epoch_end(self, state: State) -> None:
        for name, value in state.metrics.items():
            self.writer.add_scalar(board_tag(name), value, state.epoch)
        if state.best.value is not None:
            self.writer.add_scalar(best_tag(state.best.monitor), state.best.value, state.epoch)
        if self.sample is not None:
            device = next(state.raw_model.parameters()).device
            with torch.no_grad():
                samples = self.sample(64, torch.Generator(device).manual_seed(0)).float().cpu()
            if samples.dim() == 4 and samples.shape[1] in (1, 3):
                self.writer.add_image("samples", image_grid(samples), state.epoch)
        self.writer.flush()

    def on_fit_end(self, state: State) -> None:
        for name, value in state.test_metrics.items():
            self.writer.add_scalar(board_tag(name), value, state.epoch)
        self.writer.close()


def image_grid(images: torch.Tensor, columns: int = 8) -> torch.Tensor:
    """(N, C, H, W) -> one (C, rows*H, columns*W) image scaled to [0, 1] (min-max over the batch)."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    padded = torch.cat([images, images.new_zeros(rows * columns - n, c, h, w)])
    grid = padded.reshape(rows, columns, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, columns * w)
    return (grid - grid.min()) / (grid.max() - grid.min()).clamp_min(1e-8)


@CALLBACKS.register("progress", builtin=None, main_only=True)
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


def quiet_writer_thread() -> None:
    """TensorBoard's writer thread prints the traceback of an OSError (a full disk, a deleted run folder) and the
    main thread raises the same error at its next write, which dltrain reports in one line: once is enough."""
    import threading

    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args: Any) -> None:
        if not (type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError)):
            previous(args)

    hook.quiets_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook
