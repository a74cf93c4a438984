"""How many intra-op CPU threads a run trains with: a deterministic function of the run's config (the forward
FLOPs of one optimizer step of its model on its data) and the cores this process may use, never of the machine's
current load, so that the same run gives the same numbers; a resume keeps the count its run recorded.

Why not torch's default (one thread per core): on a busy machine (a shared server, a sweep beside a test run) its
threads wait on each other, and small models trained 10-30x slower per epoch than with one thread; on a quiet
machine a second thread only pays for models with enough work per step (bench/threads.py, bench/README.md).

The rule: one thread per FLOPS_PER_THREAD forward FLOPs per step, at least 1, at most this process's cores.
`trainer.threads` overrides it; so does OMP_NUM_THREADS, the usual way to pin a process's threads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

from dltrain.core.dist import cores_per_process
from dltrain.core.env import omp_threads

# Forward FLOPs per optimizer step that earn a thread (2 FLOPs = 1 multiply-add). bench/threads.py on 2 shared
# cores (bench/README.md, "threads"): under load a second thread made every case slower, 2.4-5x at 1.5 GFLOP
# per step up to 114x at 2 MFLOP; on a quiet machine two threads won only slightly in issue 16 (1.5 vs 2.1 s per
# epoch). So a second thread only from 1 GFLOP per step, where a quiet machine gains most and a busy one loses
# least. Rerun the bench's quiet condition on a quiet machine to move this threshold.
FLOPS_PER_THREAD = 500e6


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # "trainer.threads" | "resumed run" | "OMP_NUM_THREADS" | "rule"
    flops_per_step: int  # forward FLOPs of one optimizer step of this process (the rule's input)


def auto_threads(flops_per_step: float, cores: int) -> int:
    """The rule: one thread per FLOPS_PER_THREAD forward FLOPs per step, within [1, cores]. Pure: the same
    model, batch and core count give the same count on every machine and at any load."""
    return max(1, min(cores, int(flops_per_step // FLOPS_PER_THREAD)))


def forward_flops(model: nn.Module, sample: torch.Tensor) -> int:
    """Forward FLOPs of `model` on `sample` (a batch of one): torch's FlopCounterMode counts matrix products and
    convolutions; recurrent layers (one aten op it does not count) add 2 FLOPs per weight per time step.
    Evaluation mode, no gradients and a forked RNG: the model and the run's random streams stay as they were."""
    recurrent: list[int] = []

    def count_recurrent(module: nn.RNNBase, args: tuple) -> None:
        x = args[0]
        steps = x.data.shape[0] if isinstance(x, PackedSequence) else x.shape[1 if module.batch_first else 0]
        weights = sum(w.numel() for name, w in module.named_parameters() if name.startswith("weight"))
        recurrent.append(2 * weights * steps)

    hooks = [m.register_forward_pre_hook(count_recurrent) for m in model.modules() if isinstance(m, nn.RNNBase)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]), FlopCounterMode(display=False) as counter:
            model(sample)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return int(counter.get_total_flops()) + sum(recurrent)


def choose(flops_per_step: int, cores: int, explicit: int | None = None, recorded: int | None = None,
           pinned: int | None = None) -> ThreadChoice:
    """The thread count of a run, first of: trainer.threads (`explicit`), the count the resumed run recorded,
    OMP_NUM_THREADS (`pinned`), the rule on this process's forward FLOPs per step and its `cores`."""
    if explicit:
        return ThreadChoice(explicit, "trainer.threads", flops_per_step)
    fresh = ThreadChoice(pinned, "OMP_NUM_THREADS", flops_per_step) if pinned else \
        ThreadChoice(auto_threads(flops_per_step, cores), "rule", flops_per_step)
    if recorded and recorded != fresh.threads:  # the same count from the same source reads the same in metrics.json
        return ThreadChoice(recorded, "resumed run", flops_per_step)
    return fresh


def recorded_threads(resume: str) -> int | None:
    """The thread count the run to resume trained with, from its checkpoint (memory-mapped: only that entry is
    read); None for a checkpoint written before it was recorded, or one that the resume itself will refuse."""
    from dltrain.core.checkpoint import checkpoint_file

    try:
        saved = torch.load(checkpoint_file(resume), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (missing or damaged: resuming.resume says what is wrong, in one line)
        return None
    threads = saved.get("threads") if isinstance(saved, dict) else None
    return threads if isinstance(threads, int) and threads > 0 else None


def settle(model: nn.Module, sample: torch.Tensor, batch_per_process: int, explicit: int | None,
           resume: str | None) -> ThreadChoice:
    """Choose this process's training threads (`choose`) and set them; `sample` is one input of the train split."""
    flops = forward_flops(model, sample) * batch_per_process
    recorded = recorded_threads(resume) if resume else None
    choice = choose(flops, cores_per_process(), explicit, recorded, omp_threads())
    torch.set_num_threads(choice.threads)
    return choice
