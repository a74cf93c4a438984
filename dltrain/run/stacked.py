"""Training a group of sweep points as one stack (the vectorised launcher's trainer, issue 21).

`train_stack(members, on_end)` opens each member as an ordinary run (run/train.py open_run: assemble, resume,
config.yaml), trains the group as one stacked model (core/stack_engine.py), and after every epoch hands each member
its own slice (its weights, its optimizer state, its metrics) so that its ordinary callbacks judge it, stop it early
and write its last.pt/best.pt, event file and dltrain.log as in a run of its own; a member that ends (early
stopping, its max_epochs, a NaN) is tested alone with the ordinary engine and reported (metrics.json with
`launcher: vectorized`). When half the stack has ended, the survivors are restacked (a smaller stack steps faster).
A killed stack leaves each member's last complete epoch: the re-run resumes each from its own last.pt.

`why_alone(config)` says why a point cannot join a stack (it then runs alone through the ordinary engine).
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dltrain.core import dist, metrics_file
from dltrain.core.callbacks import Progress
from dltrain.core.engine import end_epoch, end_fit, fit_epoch
from dltrain.core.registry import ConfigError
from dltrain.core.stack_engine import evaluate as evaluate_stack
from dltrain.core.stack_engine import train_epoch
from dltrain.core.stack_model import why_not_stackable
from dltrain.core.stack_optim import stackable_optimizer
from dltrain.models import MODELS
from dltrain.run.assemble import Assembled, pick_device
from dltrain.run.config import RunConfig
from dltrain.run.stack_build import Stack, build_stack, epoch_lrs, log_steps, means, memory_cap
from dltrain.run.train import close_run, open_run

STACKABLE_MODELS = ("mlp", "cnn")  # dltrain's own families a stack can batch (without batch_norm)
LAUNCHER = {"launcher": "vectorized"}  # the one field that tells a stacked member's metrics.json apart


@dataclass
class Member:
    """One sweep point of a stack: its checked config, its job folder and its overrides as given."""

    config: RunConfig
    run_dir: Path
    overrides: list[str]


def why_alone(config: RunConfig) -> str | None:
    """Why this point cannot be trained in a stack (one short clause), or None when it may be (a user's model is
    judged once built: `train_stack` trains one it cannot batch alone, and says why)."""
    trainer, model = config.trainer, config.model
    own_model = MODELS.get(model.name).__module__.startswith("dltrain.")  # a user's model is judged once built
    reasons = [
        (trainer.devices > 1, "trainer.devices > 1 (DDP)"),
        (own_model and model.name not in STACKABLE_MODELS, f"model={model.name} is not stackable (only mlp and cnn)"),
        (bool(model.kwargs.get("batch_norm")), "model.batch_norm=true (normalisation statistics are not stacked)"),
        (not stackable_optimizer(config.optim.name), f"optim={config.optim.name} is not one of the built-ins"),
        (trainer.accumulate > 1, "trainer.accumulate > 1"),
        (config.ema.decay is not None, "trainer.ema"),
        (str(trainer.precision) != "32", f"trainer.precision={trainer.precision}"),
        (bool(trainer.compile), "trainer.compile"),
        (bool(trainer.profile), "trainer.profile"),
        (any(bool(v) for v in (config.data.augment or {}).values()), "data.augment"),  # all off: no augmentation
        (bool(trainer.init_from) and bool(trainer.freeze or trainer.lr_scales), "trainer.freeze/lr_scales"),
        (config.task.name == "adversarial" or config.task.denoise > 0, "an adversarial or denoising task"),
    ]
    return next((f"{why} trains alone" for stop, why in reasons if stop), None)


def train_stack(members: list[Member], on_end: Callable[[int, dict[str, Any]], None],
                together_only: bool = False) -> list[dict[str, Any]]:
    """Train `members` together; each member's folder gets config.yaml, metrics.json (with `launcher:
    vectorized`), its event file and checkpoints, as an ordinary run's. `on_end(i, report)` is called as member i
    ends (members may end at different epochs); returns every member's report (metrics.json's content).
    A member that fails raises nothing here: its report has status "failed" and an "error" line. A member whose
    model cannot be stacked trains alone, or, with `together_only` (lr-find), is a ConfigError before any training."""
    device = pick_device(members[0].config.trainer)
    reports: dict[int, dict[str, Any]] = {}
    runs: dict[int, Assembled] = {}
    saved_threads = torch.get_num_threads()
    try:
        for i, member in enumerate(members):
            run, failed = open_member(member, device)
            if failed is not None:
                reports[i] = failed
                on_end(i, failed)
            else:
                runs[i] = run
        for i in [i for i, run in runs.items() if why_not_stackable(run.parts.model)]:
            if together_only:
                raise ConfigError(f"{members[i].config.model.name}: {why_not_stackable(runs[i].parts.model)}")
            reports[i] = alone(runs.pop(i), members[i])
            on_end(i, reports[i])
        train_together(runs, members, reports, on_end)
    finally:
        torch.set_num_threads(saved_threads)
    return [reports[i] for i in range(len(members))]


def open_member(member: Member, device: torch.device) -> tuple[Assembled | None, dict[str, Any] | None]:
    """The member opened as an ordinary run, its output into its dltrain.log; or its failure report."""
    started = time.monotonic()
    try:
        with member_output(member.run_dir):
            run = open_run(member.config, member.run_dir, device, member.overrides)
    except ConfigError as err:
        return None, failure("; ".join(err.problems), started, member)
    except (OSError, RuntimeError, ValueError) as err:
        return None, failure(f"{type(err).__name__}: {err}", started, member)
    for cb in run.callbacks:
        if isinstance(cb, Progress):  # each member's epoch lines go to its own dltrain.log
            cb.stream, cb.tty = open(member.run_dir / "dltrain.log", "a"), False  # noqa: SIM115 (closed at end)
    return run, None


def failure(message: str, started: float, member: Member) -> dict[str, Any]:
    record = metrics_file.failure(message, time.monotonic() - started, member.overrides)
    with contextlib.suppress(OSError):
        metrics_file.write(member.run_dir, record)
    return record


@contextlib.contextmanager
def member_output(run_dir: Path):  # noqa: ANN201
    """What a member prints while it is opened goes to its dltrain.log, as a sweep job's output does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "dltrain.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def alone(run: Assembled, member: Member) -> dict[str, Any]:
    """A member whose model the stack cannot batch: its ordinary fit, with the reason on the terminal."""
    print(f"vectorized: {member.run_dir.name} trains alone: {why_not_stackable(run.parts.model)}", flush=True)
    with member_output(member.run_dir):
        run.fit()
    return close_run(run, member.overrides)


def train_together(runs: dict[int, Assembled], members: list[Member], reports: dict[int, dict[str, Any]],
                   on_end: Callable[[int, dict[str, Any]], None]) -> None:
    """The stack's epochs until every member has ended; restacked when half of it has."""
    for run in runs.values():
        for cb in run.callbacks:
            cb.on_fit_start(run.state)
    live = [i for i, run in runs.items() if not finished(run)]
    for i in [i for i in runs if i not in live]:
        reports[i] = end_member(runs[i], members[i])
        on_end(i, reports[i])
    share_splits(runs.values())
    cap = memory_cap([runs[i] for i in live], device_of(runs))
    for start in range(0, len(live), cap):  # stacks that fit the device's free memory, one after another
        train_chunk(runs, live[start:start + cap], members, reports, on_end)


def share_splits(runs: Iterable[Assembled]) -> None:
    """Members with the same seed built the same splits (the seed decides them): they share one copy on the device
    instead of holding one each (16 MNIST members: 15 copies of 31 MB fewer)."""
    first: dict[int, Assembled] = {}
    for run in runs:
        kept = first.setdefault(run.settings.seed, run)
        if kept is not run and all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
                                   for a, b in zip(kept.splits, run.splits)):
            run.splits = kept.splits


def device_of(runs: dict[int, Assembled]) -> torch.device:
    return next(iter(runs.values())).splits[0].x.device if runs else torch.device("cpu")


def train_chunk(runs: dict[int, Assembled], live: list[int], members: list[Member],
                reports: dict[int, dict[str, Any]], on_end: Callable[[int, dict[str, Any]], None]) -> None:
    """One stack's epochs until each of its members has ended; restacked when half of it has."""
    stack: Stack | None = None
    while len(live) > 1:
        if stack is None or len(live) <= len(stack.runs) // 2:  # restack the survivors: a smaller stack is faster
            stack = build_stack([runs[i] for i in live])
        ended = {id(run) for run in stack_ended(stack, [runs[i] for i in live])}
        for i in [i for i in live if id(runs[i]) in ended]:
            reports[i] = end_member(runs[i], members[i])
            on_end(i, reports[i])
        live = [i for i in live if not finished(runs[i])]
    for i in live:  # a stack of one is slower than the ordinary loop (0.6x on the digits MLP): the last member
        alone_to_end(runs[i])  # goes on there, from its own model and optimizer, synced at every epoch's end
        reports[i] = end_member(runs[i], members[i])
        on_end(i, reports[i])


def alone_to_end(run: Assembled) -> None:
    """The ordinary engine's epochs for one member, until it ends (fit's loop, its callbacks already started)."""
    while not finished(run):
        fit_epoch(run.state, run.parts.task, run.splits[0], run.splits[1], run.settings, run.callbacks)


def finished(run: Assembled) -> bool:
    return run.state.should_stop or run.state.epoch >= run.settings.max_epochs


def stack_ended(stack: Stack, live: list[Assembled]) -> list[Assembled]:
    """One epoch of the stack; each live member judged and called back as after its own epoch. Returns the
    members that ended (they stay in the stack, frozen: `stack.active`, until it is rebuilt)."""
    runs = stack.runs
    epochs = [run.state.epoch for run in runs]
    lrs = epoch_lrs(runs, stack.steps_per_epoch, stack.device)
    started = time.perf_counter()
    sums, seen = train_epoch(stack.model, stack.optimizer, stack.task, stack.train, stack.settings, epochs, lrs,
                             stack.active, log_steps(runs, stack.steps_per_epoch), stack.log)
    train_means = means(sums, seen, stack.names, "train")
    seconds = time.perf_counter() - started
    val_means = means(evaluate_stack(stack.model, stack.task, stack.val, stack.settings.batch_size,
                                     stack.settings.smoothing), len(stack.val), stack.names, "val") \
        if len(stack.val) else [{} for _ in runs]
    ended, live_ids, epoch_ends = [], {id(run) for run in live}, []
    for m, run in enumerate(runs):
        if id(run) not in live_ids:
            continue
        metrics = {**train_means[m], **val_means[m]}
        metrics.update(run.parts.task.derived(metrics))
        per_step = run.settings.lr_per_step
        metrics.update({"lr": run.settings.lr_at(run.state.step if per_step else run.state.epoch),
                        "throughput/samples_per_sec": len(stack.train) / seconds, "time/epoch_sec": seconds})
        stack.model.store_member(m, run.parts.model)  # its slice into its own model and optimizer
        stack.optimizer.export_member(m, run.state.optimizer, list(run.parts.model.parameters()))
        epoch_ends.append((run, metrics))
    # Each member's epoch end (judged, its callbacks: last.pt/best.pt, events, log) in threads: the checkpoint
    # writes wait on fsync, which releases the GIL, and the file system commits them together (16 members of the
    # digits run: 4.5 s of a 20-epoch sweep's 11 s in fsync one by one). All are done before the next epoch.
    with ThreadPoolExecutor(max_workers=min(16, len(epoch_ends)) or 1) as pool:
        list(pool.map(lambda item: member_epoch_end(stack, item[0], item[1], seen, seconds), epoch_ends))
    for m, run in enumerate(runs):
        if id(run) in live_ids and finished(run):
            ended.append(run)
            stack.active[m] = False  # frozen from the next step on: its updates are masked, its slice kept
    return ended


def member_epoch_end(stack: Stack, run: Assembled, metrics: dict[str, float], seen: int, seconds: float) -> None:
    """A member's epoch, its slice already in its own model and optimizer: judged and called back."""
    state = run.state
    state.step += stack.steps_per_epoch
    state.samples_seen += seen
    state.train_seconds += seconds
    end_epoch(state, metrics, run.callbacks)


def end_member(run: Assembled, member: Member) -> dict[str, Any]:
    """A member's end, as `engine.fit`'s: best weights restored, tested alone, its callbacks' last events, report."""
    end_fit(run.state, run.parts.task, run.splits[2], run.settings, run.callbacks)
    for cb in run.callbacks:
        if isinstance(cb, Progress) and cb.stream not in (sys.stdout, sys.stderr):
            cb.stream.close()
    return close_run(run, member.overrides, **LAUNCHER) if dist.is_rank0() else {}
