"""A stack built from opened member runs (run/stacked.py): their models as one StackedModel, their optimizers as
one StackedOptimizer (each member's state imported: a resumed member goes on from its own), their splits on the
device once per distinct seed, their per-member knobs as tensors; and what the stack's epoch reads back per
member (the means, the learning rates, the steps at which the running loss is logged).

A stack can be rebuilt at any epoch's end from the same runs: after every epoch each member's own model and torch
optimizer hold its state (run/stacked.py member_epoch_end), which is all a stack is made from.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dltrain.core.engine import steps_per_epoch
from dltrain.core.stack_engine import StackData, StackSettings, label_smoothings
from dltrain.core.stack_model import StackedModel
from dltrain.core.stack_optim import StackedOptimizer
from dltrain.core.tasks import Task
from dltrain.run import threads
from dltrain.run.assemble import Assembled


@dataclass(eq=False)
class Stack:
    """The members' runs (in stack order) and what trains them together."""

    runs: list[Assembled]
    model: StackedModel
    optimizer: StackedOptimizer
    task: Task
    train: StackData
    val: StackData
    settings: StackSettings
    steps_per_epoch: int
    names: tuple[str, ...]  # ("loss", *metric names): the columns of the stack's metric sums
    active: torch.Tensor  # (N,) bool: members still training (an ended one is frozen until the stack is rebuilt)
    device: torch.device

    def log(self, step: int, sums: torch.Tensor, seen: int) -> None:
        """The running train metrics after `step` steps of this epoch, to each member due to log now (one host read)."""
        rows, active = sums.tolist(), self.active.tolist()
        for m, run in enumerate(self.runs):
            state, every = run.state, run.settings.log_every_n_steps
            if not active[m] or (state.step + step) % every:
                continue
            running = {f"train/{name}": value / max(seen, 1) for name, value in zip(self.names, rows[m])}
            at_epoch_start, state.step = state.step, state.step + step  # what the callbacks read as this step
            for cb in run.callbacks:
                cb.on_train_log(state, running)
            state.step = at_epoch_start


def build_stack(runs: list[Assembled]) -> Stack:
    """One stack from opened runs whose configs the launcher grouped (same architecture, data, optimizer name)."""
    first = runs[0]
    device = first.splits[0].x.device
    model = StackedModel([run.parts.model for run in runs])
    optim = first.parts.config.optim
    exclude = bool(optim.kwargs.get("exclude_bias_and_norm", False))
    optimizer = StackedOptimizer(optim.name, model.params, [run.parts.config.optim.kwargs for run in runs],
                                 [not (exclude and p.dim() <= 2) for p in model.params])  # a member's 1-d: no decay
    for m, run in enumerate(runs):
        optimizer.import_member(m, run.state.optimizer, list(run.parts.model.parameters()))
    train, val = (member_splits(runs, k) for k in (0, 1))
    task = first.parts.task
    size = len(first.splits[0])
    settings = StackSettings(
        batch_size=first.settings.batch_size, seeds=[run.settings.seed for run in runs],
        l1=per_member(runs, "l1", device), l2=per_member(runs, "l2", device),
        grad_clip=per_member(runs, "grad_clip", device),
        smoothing=smoothing_on(runs, device))
    set_threads(runs)
    return Stack(runs, model, optimizer, task, train, val, settings,
                 steps_per_epoch(size, first.settings.batch_size, 1, 1), ("loss", *task.metric_names),
                 torch.ones(len(runs), dtype=torch.bool, device=device), device)


def per_member(runs: Sequence[Assembled], key: str, device: torch.device) -> torch.Tensor:
    return torch.tensor([float(getattr(run.settings, key) or 0.0) for run in runs], device=device)


def smoothing_on(runs: Sequence[Assembled], device: torch.device) -> torch.Tensor | None:
    smoothing = label_smoothings([run.parts.task for run in runs])
    return None if smoothing is None else smoothing.to(device)


def member_splits(runs: Sequence[Assembled], which: int) -> StackData:
    """Split `which` (0 train, 1 val) of every member: one copy per distinct seed (the seed decides the split)."""
    distinct: dict[int, int] = {}
    for run in runs:
        distinct.setdefault(run.settings.seed, len(distinct))
    by_seed = {run.settings.seed: run.splits[which] for run in runs}
    splits = [by_seed[seed] for seed in distinct]
    member_data = torch.tensor([distinct[run.settings.seed] for run in runs], device=splits[0].x.device)
    return StackData(torch.stack([s.x for s in splits]), torch.stack([s.y for s in splits]), member_data)


def set_threads(runs: Sequence[Assembled]) -> None:
    """The stack's intra-op threads by the rule every run uses (run/threads.py), for the stack's forward FLOPs."""
    first = runs[0].thread_choice
    if first.source != "rule":  # trainer.threads, OMP_NUM_THREADS or a resumed run's: as chosen
        return
    choice = threads.choose(first.flops_per_step * len(runs), threads.cores_per_process())
    torch.set_num_threads(choice.threads)


def epoch_lrs(runs: Sequence[Assembled], steps: int, device: torch.device) -> torch.Tensor:
    """(N, steps): each member's learning rate at each optimizer step of its coming epoch, from its own schedule
    (per step: lr_at(step); per epoch: lr_at(epoch) all epoch long). Python per member per epoch, not per step."""
    rows = []
    for run in runs:
        state, settings = run.state, run.settings
        if settings.lr_per_step:
            rows.append([settings.lr_at(state.step + s) for s in range(steps)])
        else:
            rows.append([settings.lr_at(state.epoch)] * steps)
    return torch.tensor(rows, dtype=torch.float64, device=device)


def log_steps(runs: Sequence[Assembled], steps: int) -> set[int]:
    """The steps of the coming epoch (1-based) after which some member logs its running loss (every
    log_every_n_steps of its own optimizer steps, as the ordinary loop does)."""
    every = runs[0].settings.log_every_n_steps
    if not every:
        return set()
    return {s for s in range(1, steps + 1) for run in runs if (run.state.step + s) % every == 0}


def means(sums: torch.Tensor, count: int, names: Sequence[str], prefix: str) -> list[dict[str, float]]:
    """Each member's means from its (N, len(names)) sums over `count` samples: one host read."""
    return [{f"{prefix}/{name}": value / max(count, 1) for name, value in zip(names, row)} for row in sums.tolist()]


def member_bytes(run: Assembled, own_data: bool) -> int:
    """What one more member adds to a stack, in bytes: its parameters 5 times over (the stacked weights, their
    gradients, up to 3 optimizer states) and 3 more for its own copies (its model, its best epoch's weights, its
    exported optimizer), its activations (a batch through every layer, kept for the backward pass, x3), and its
    own train and val split when its seed gives it one (`own_data`)."""
    params = sum(p.numel() * p.element_size() for p in run.parts.model.parameters())
    widths = sum(p.shape[0] for p in run.parts.model.parameters() if p.dim() >= 2)  # units per layer, summed
    activations = 3 * run.settings.batch_size * max(widths, 1) * 4
    data = sum(s.x.numel() * s.x.element_size() + s.y.numel() * s.y.element_size() for s in run.splits[:2])
    return 8 * params + activations + (data if own_data else 0)


def free_bytes(device: torch.device) -> int:
    """The device's free memory: CUDA's own count, or the host's MemAvailable (Linux; else 8 GiB assumed)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as info:
            line = next(row for row in info if row.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return 8 << 30


def memory_cap(runs: Sequence[Assembled], device: torch.device, free: int | None = None) -> int:
    """The most members one stack may hold: half of the device's free memory (`free` bytes, else measured) over
    one member's bytes (members with their own seed count their data); at least 1. Says so in one line when it
    splits the group."""
    if not runs:
        return 1
    seeds = {run.settings.seed for run in runs}
    own = len(seeds) > 1
    each = max(member_bytes(run, own) for run in runs)
    cap = max(1, int((free_bytes(device) if free is None else free) // 2 // max(each, 1)))
    if cap < len(runs):
        print(f"vectorized: {len(runs)} members need ~{each / 2**20:.1f} MiB each on {device.type}; stacks of at "
              f"most {cap} (half the free memory), one after another", flush=True)
    return cap
