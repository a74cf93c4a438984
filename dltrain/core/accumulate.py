"""Gradient accumulation (`trainer.accumulate=k`): which batches of an epoch step the optimizer.

The epoch's kept batches (a last one too small to share dropped, see engine.min_share) form groups of k
consecutive ones; the gradients of a group's batches are summed into .grad and the optimizer steps once, after its
last. A group never spans two epochs, so the epoch's last group may hold fewer than k batches. Each batch's loss is
divided by the samples of its whole group (engine.train_epoch), so the step's gradient is the gradient of the mean
loss over the group's samples: the step of one batch of those samples (docs/guide.md, "Gradient accumulation").
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

from torch import nn


class MicroBatch(NamedTuple):
    """One kept batch of an epoch and its place in its optimizer step's group of `accumulate` batches."""

    start: int  # its first position in the epoch's permutation
    count: int  # its samples (global: all processes together)
    group_count: int  # the samples of its whole group: what the group's summed loss is divided by
    first: bool  # the group's first batch: the gradients are zeroed before it
    last: bool  # the group's last batch: the optimizer steps after it (under DDP, the one all-reduce)


def micro_batches(train_size: int, batch_size: int, world: int, share: int, accumulate: int) -> list[MicroBatch]:
    """The epoch's kept batches in groups of `accumulate` consecutive ones; a group never spans two epochs, so the
    last may be shorter. Host integers only: the plan costs no kernel and no sync."""
    kept = [(start, min(batch_size, train_size - start)) for start in range(0, train_size, batch_size)]
    kept = [(start, count) for start, count in kept if count // world >= share]  # see min_share
    plan = []
    for g in range(0, len(kept), accumulate):
        group = kept[g:g + accumulate]
        total = sum(count for _, count in group)
        plan += [MicroBatch(start, count, total, i == 0, i == len(group) - 1) for i, (start, count) in enumerate(group)]
    return plan


def sync_unless(model: nn.Module, stepping: bool) -> contextlib.AbstractContextManager:
    """Around a forward pass: under DDP a batch after which the optimizer does not step runs in `no_sync`, so its
    backward all-reduces nothing and its gradient stays local, summed into .grad; the stepping batch's backward
    all-reduces the group's sum once. Without DDP, or for a stepping batch (every batch when accumulate=1), nothing."""
    ddp = getattr(model, "_orig_mod", model)  # the DDP module under torch.compile's wrapper
    if stepping or not isinstance(ddp, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()
