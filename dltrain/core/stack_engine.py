"""The engine's loop for a stack of N members (the vectorised launcher, issue 21): one epoch of `train_epoch` takes
one optimizer step of every member per batch, with each member's own batches (its own permutation and, with its
own seed, its own data split), learning rate, penalty and clipping, all as (N, ...) tensors; `evaluate` sums each
member's metrics over a split. The same mathematics as core/engine.py's loop, member by member (its exactness is
tested against it); the number of kernels per step does not depend on N, and nothing reaches the host per step
except the running train loss every `log_every_n_steps` steps, as in the ordinary loop.

What differs from one member's ordinary run: dropout masks come from the process's generator, drawn for all members
at once (not the member's own stream); float sums may round differently (batched matmuls, grouped convolutions).
"""
from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dltrain.core.accumulate import micro_batches
from dltrain.core.stack_model import StackedModel
from dltrain.core.stack_optim import StackedOptimizer
from dltrain.core.tasks import Classification, Task


@dataclass
class StackData:
    """A split for every member: `x` (D, n, ...) and `y` (D, n, ...) hold the D distinct splits (members with the same
    seed share one), `member_data` (N,) says which is each member's."""

    x: torch.Tensor
    y: torch.Tensor
    member_data: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[1]

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples `idx` (N, B) of each member's own split: (N, B, ...) inputs and targets, one gather each."""
        if self.x.shape[0] == 1:  # one split for all (the members share a seed): a plain gather, 2x faster
            return self.x[0][idx], self.y[0][idx]
        rows = self.member_data.unsqueeze(1)
        return self.x[rows, idx], self.y[rows, idx]


@dataclass
class StackSettings:
    """Per-member knobs as (N,) tensors on the device, and what the members share."""

    batch_size: int
    seeds: Sequence[int]  # each member's trainer.seed: its batches' permutation
    l1: torch.Tensor
    l2: torch.Tensor
    grad_clip: torch.Tensor  # 0: no clipping for that member
    smoothing: torch.Tensor | None  # per-member label smoothing, when the members' differ (classification)


def member_sums(task: Task, model: StackedModel, x: torch.Tensor, y: torch.Tensor,
                smoothing: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's (loss summed over its batch, metric sums) on the batch x: written out for classification with
    cross entropy (the default task: 3x faster than through vmap, whose log_softmax on (N*B, 10) took 180 us), else
    the task's own step, applied member by member by torch.func.vmap (one set of kernels for all members)."""
    if smoothing is not None:
        return smoothed_classification(model(x), y, smoothing)
    if isinstance(task, Classification) and task.loss == "cross_entropy":
        return classification(model(x, classes_first=True), y, task.label_smoothing)
    def one(o: torch.Tensor, xm: torch.Tensor, ym: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return task.step(lambda _inputs: o, xm, ym)  # the task's model call returns this member's output
    return torch.func.vmap(one)(model(x), x, y)


def classification(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification.step for (N, C, B) logits against (N, B) classes: each member's summed cross entropy and
    number correct."""
    logits = logits.float()
    loss = F.cross_entropy(logits, y, reduction="none", label_smoothing=smoothing).sum(1)
    predicted = logits.detach().transpose(1, 2).contiguous().argmax(-1)  # a row per sample: 10x faster than dim 1
    correct = (predicted == y).sum(1, dtype=torch.float32)
    return loss, torch.stack([loss.detach(), correct], dim=1)


def smoothed_classification(logits: torch.Tensor, y: torch.Tensor,
                            smoothing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross entropy with each member's label smoothing eps (torch's formula: (1 - eps) * nll + eps * mean over
    classes of -log p), and accuracy; (N, B, C) logits against (N, B) classes."""
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    eps = smoothing.unsqueeze(1)
    loss = ((1 - eps) * nll + eps * (-logp.mean(-1))).sum(1)
    correct = (logits.argmax(-1) == y).sum(1, dtype=torch.float32)
    return loss, torch.stack([loss.detach(), correct], dim=1)


def penalty(model: StackedModel, l1: torch.Tensor, l2: torch.Tensor, use_l1: bool, use_l2: bool) -> torch.Tensor:
    """Each member's explicit penalty on its weights with >= 2 dims (reg.penalty's rule), (N,)."""
    weights = [p for p in model.params if p.dim() >= 3]
    total = torch.zeros(model.n, device=model.params[0].device)
    if use_l1:
        total = total + l1 * sum(w.abs().flatten(1).sum(1) for w in weights)
    if use_l2:
        total = total + 0.5 * l2 * sum(w.pow(2).flatten(1).sum(1) for w in weights)
    return total


def clip_gradients(model: StackedModel, max_norm: torch.Tensor) -> None:
    """Each member's gradient scaled to at most its max_norm (torch's clip_grad_norm_ formula); 0: not clipped."""
    grads = [p.grad for p in model.params]
    norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]),
                                     dim=0)
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    coef = torch.where(max_norm > 0, coef, torch.ones_like(coef))
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def permutations(n: int, seeds: Sequence[int], epochs: Sequence[int], device: torch.device) -> torch.Tensor:
    """Each member's order of its training samples this epoch, from the generator the ordinary loop seeds (N, n)."""
    return torch.stack([torch.randperm(n, device=device, generator=torch.Generator(device=device).manual_seed(
        seed * 1_000_003 + epoch)) for seed, epoch in zip(seeds, epochs)])


def train_epoch(model: StackedModel, optimizer: StackedOptimizer, task: Task, train: StackData,
                settings: StackSettings, epochs: Sequence[int], lrs: torch.Tensor, active: torch.Tensor,
                log_at: Container[int] = (), on_log: Callable[[int, torch.Tensor, int], None] | None = None,
                ) -> tuple[torch.Tensor, int]:
    """One epoch of every member (member m at its epoch `epochs[m]`); `lrs` (N, steps) is each member's learning rate
    at each step of this epoch. Returns the (N, 1 + metrics) sums of the epoch and the samples each member saw.
    `on_log(step_in_epoch, sums, seen)` is called after the steps of this epoch listed in `log_at` (1-based: where
    some member's own step count reaches a multiple of its log_every_n_steps; a host read there only)."""
    device, n = train.x.device, len(train)
    perms = permutations(n, settings.seeds, epochs, device)
    use_l1, use_l2 = bool((settings.l1 > 0).any()), bool((settings.l2 > 0).any())  # once per epoch
    use_clip = bool((settings.grad_clip > 0).any())
    all_active = bool(active.all())  # once per epoch: a member ends only at an epoch's end
    sums, seen, step = None, 0, 0
    model.train()
    for micro in micro_batches(n, settings.batch_size, 1, 1, 1):  # a last batch smaller than 1 sample: none
        x, y = train.take(perms[:, micro.start:micro.start + micro.count])
        loss, batch_sums = member_sums(task, model, x, y, settings.smoothing)
        if use_l1 or use_l2:
            loss = loss + penalty(model, settings.l1, settings.l2, use_l1, use_l2) * micro.count
        for p in model.params:
            p.grad = None
        loss.backward(torch.full_like(loss, 1.0 / micro.count))  # each member's mean over its batch
        if use_clip:
            clip_gradients(model, settings.grad_clip)
        optimizer.step(lrs[:, step], active, all_active)
        sums = batch_sums.detach() if sums is None else sums.add_(batch_sums.detach())
        seen += micro.count
        step += 1
        if on_log is not None and step in log_at:
            on_log(step, sums, seen)
    return sums, seen


@torch.no_grad()
def evaluate(model: StackedModel, task: Task, split: StackData, batch_size: int,
             smoothing: torch.Tensor | None) -> torch.Tensor:
    """Each member's metric sums over its whole split, (N, 1 + metrics), on the device."""
    model.eval()
    sums = None
    for start in range(0, len(split), batch_size):
        x = split.x[split.member_data, start:start + batch_size]
        y = split.y[split.member_data, start:start + batch_size]
        _, batch_sums = member_sums(task, model, x, y, smoothing)
        sums = batch_sums if sums is None else sums.add_(batch_sums)
    return sums


def label_smoothings(tasks: Sequence[Task]) -> torch.Tensor | None:
    """The members' label smoothing as a tensor when they differ (else None: the task's own step does it)."""
    values = [getattr(t, "label_smoothing", 0.0) for t in tasks]
    if len(set(values)) <= 1:
        return None
    if not all(isinstance(t, Classification) and t.loss == "cross_entropy" for t in tasks):
        raise ValueError("per-member label smoothing needs classification with cross entropy")
    return torch.tensor(values)
