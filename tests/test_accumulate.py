"""Gradient accumulation (trainer.accumulate=k) is exactly a larger batch: k batches of B summed into one optimizer
step give the weights of one batch of k*B, to float tolerance, for a model without batch norm or dropout; the
epoch's ragged last group is divided by its own sample count; penalties and clipping act once per step; schedules
with interval: step count optimizer steps; under DDP the k-1 batches before a step do not all-reduce (no_sync)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dltrain.core import checkpoint
from dltrain.core.accumulate import micro_batches
from dltrain.core.engine import LoopSettings, State, steps_per_epoch, train_epoch
from dltrain.core.registry import ConfigError
from dltrain.core.tasks import Classification
from dltrain.data import Split
from dltrain.run.assemble import build, make_optimizer, make_settings
from dltrain.run.config import RunConfig
from tests.conftest import compose, load_scalars, parse, run

GEN = torch.Generator().manual_seed(3)
DATA = {n: Split(torch.randn(n, 5, generator=GEN), torch.randint(0, 3, (n,), generator=GEN)) for n in (20, 22)}
OPTIMIZERS = {"sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
              "adam": lambda params: torch.optim.Adam(params, lr=0.01)}


def mlp_after(epochs: int, n: int, batch: int, accumulate: int, optimizer: str, extras: dict) -> nn.Module:
    """An MLP (no dropout, no batch norm) after `epochs` of the engine's train_epoch on DATA[n]; the lr falls per
    optimizer step (t = state.step), so a step counted per batch would show."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    state = State(model=model, raw_model=model, optimizer=OPTIMIZERS[optimizer](model.parameters()),
                  scaler=torch.amp.GradScaler("cpu", enabled=extras.get("scaler", False)))
    settings = LoopSettings(max_epochs=epochs, batch_size=batch, lr_at=lambda t: 0.1 / (1 + t), lr_per_step=True,
                            grad_clip=extras.get("grad_clip"), l1=extras.get("l1", 0.0), l2=extras.get("l2", 0.0),
                            log_every_n_steps=0, accumulate=accumulate)
    for _ in range(epochs):
        train_epoch(state, Classification(), DATA[n], settings, [])
        state.epoch += 1
    assert state.step == epochs * steps_per_epoch(n, batch, 1, 1, accumulate)
    return model


# 22 samples at B=3, k=2: batches 3,3,3,3,3,3,3,1 -> groups of 6,6,6,4 samples = batch 6's 6,6,6,4 (a ragged batch)
# 20 samples at B=3, k=3: batches 3,3,3,3,3,3,2 -> groups of 9,9,2 samples (a group of 1 batch) = batch 9's 9,9,2
CASES = {"ragged_last_batch": (22, 3, 2), "ragged_last_group": (20, 3, 3)}
EXTRAS = {"plain": {}, "penalties_clip_scaler": {"l1": 1e-3, "l2": 1e-2, "grad_clip": 0.5, "scaler": True}}


@pytest.mark.parametrize("extras", EXTRAS.values(), ids=EXTRAS.keys())
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_k_batches_of_b_are_one_batch_of_k_times_b(optimizer: str, case: tuple[int, int, int], extras: dict) -> None:
    n, batch, k = case
    accumulated = mlp_after(3, n, batch, k, optimizer, extras)
    large = mlp_after(3, n, batch * k, 1, optimizer, extras)
    for a, b in zip(accumulated.parameters(), large.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-6)  # measured: <= 9e-8 (float32 summation order)


def test_the_plan_groups_kept_batches_and_never_spans_an_epoch() -> None:
    plan = micro_batches(20, 3, 1, 1, 3)
    assert [(m.count, m.group_count, m.first, m.last) for m in plan] == [
        (3, 9, True, False), (3, 9, False, False), (3, 9, False, True),
        (3, 9, True, False), (3, 9, False, False), (3, 9, False, True), (2, 2, True, True)]
    # batch norm under 2 processes: a last batch of 1 cannot be shared and is dropped before grouping
    assert [(m.count, m.group_count) for m in micro_batches(9, 4, 2, 2, 2)] == [(4, 8), (4, 8)]
    assert all(m.first and m.last and m.count == m.group_count for m in micro_batches(22, 3, 1, 1, 1))


# digits: 1078 training samples; at batch 50 that is 22 batches (21 of 50, one of 28): 6 steps with k=4, the last
# summing 2 batches (78 samples), as batch 200's 6 batches (5 of 200, one of 78)
REAL = ["model.hidden=[32]", "optim=momentum", "optim.lr=0.1", "sched=cosine", "sched.warmup=3", "trainer.max_epochs=2",
        "trainer.log_every_n_steps=0", "trainer.device=cpu", "early_stopping=none"]


def test_a_run_with_accumulate_equals_a_run_with_the_larger_batch(tmp_path) -> None:
    """Real runs: the same weights and the same per-epoch train loss; the schedule's t counts optimizer steps, so
    both runs end on the same learning rate, with warm-up and cosine spanning ceil(22 / 4) * 2 = 12 steps."""
    accumulated = run([*REAL, "data.batch_size=50", "trainer.accumulate=4"], tmp_path / "k4")
    large = run([*REAL, "data.batch_size=200"], tmp_path / "b200")
    a, b = checkpoint.load(tmp_path / "k4" / "last.pt"), checkpoint.load(tmp_path / "b200" / "last.pt")
    assert a["step"] == b["step"] == 2 * math.ceil(22 / 4)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-5)
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert accumulated["final"]["train/loss"] == pytest.approx(large["final"]["train/loss"], rel=1e-5)


def test_interval_step_counts_optimizer_steps(tmp_path) -> None:
    """Each epoch of 22 batches with k=4 takes ceil(22/4) = 6 steps: epoch 2 starts at lr_at(6) (its logged lr),
    the last step's lr is lr_at(11), and the cosine after a warm-up of 3 steps reaches min_lr exactly at 2 * 6."""
    overrides = [*REAL, "data.batch_size=50", "trainer.accumulate=4", "sched.min_lr=0.01"]
    run(overrides, tmp_path)
    saved = checkpoint.load(tmp_path / "last.pt")
    parts = build(parse(overrides))
    lr_at = make_settings(parts, len(parts.data.train), make_optimizer(parts)[1]).lr_at
    logged = next(values for tag, values in load_scalars(tmp_path).items() if tag.split("/")[-1] == "lr")
    assert saved["step"] == 12
    assert [lr for _, lr in logged] == pytest.approx([lr_at(0), lr_at(6)])  # per epoch, at its start
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr_at(11))
    assert lr_at(12) == pytest.approx(0.01) and lr_at(11) > 0.01 + 1e-4 and lr_at(2) < lr_at(3) == pytest.approx(0.1)


# A registered callback that counts DDP's all-reduces: a comm hook on the DDP module, kept in its state (checkpoint)
COUNTER = '''
import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from dltrain import Callback, register_callback


def counting(calls, bucket):
    calls["allreduces"] += 1
    return allreduce_hook(None, bucket)


@register_callback("allreduce_counter")
class AllReduceCounter(Callback):
    def __init__(self):
        self.calls = {"allreduces": 0}

    def on_fit_start(self, state):
        assert isinstance(state.model, torch.nn.parallel.DistributedDataParallel)
        state.model.register_comm_hook(self.calls, counting)

    def state_dict(self):
        return dict(self.calls)
'''


def test_ddp_accumulates_locally_and_all_reduces_once_per_step(tmp_path) -> None:
    """Two gloo processes with k=4 train the weights one process does (same global batches), and DDP all-reduces
    once per optimizer step (12), not once per batch (44): the other batches run in no_sync."""
    plugin = tmp_path / "counter.py"
    plugin.write_text(COUNTER)
    overrides = [*REAL, "data.batch_size=50", "trainer.accumulate=4"]
    single = run(overrides, tmp_path / "one")
    ddp = [*overrides, "trainer.devices=2", f"+plugins=[{plugin}]", "+callbacks.allreduce_counter={}"]
    from dltrain.run.train import run_job

    double = run_job(RunConfig.load(compose(ddp), None), tmp_path / "two", ddp)
    assert double["world_size"] == 2
    a, b = checkpoint.load(tmp_path / "one" / "last.pt"), checkpoint.load(tmp_path / "two" / "last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    assert b["step"] == 12 and b["callbacks"]["AllReduceCounter"] == {"allreduces": 12}  # one bucket per step
    assert abs(single["final"]["val/loss"] - double["final"]["val/loss"]) < 1e-5


@pytest.mark.parametrize("value, line", [
    ("0", "trainer.accumulate=0 must be an integer >= 1 (batches whose gradients one optimizer step sums; 1 = a step "
          "per batch)"),
    ("2.5", "trainer.accumulate=2.5"),
])
def test_a_bad_accumulate_is_one_line(value: str, line: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse([f"trainer.accumulate={value}"])
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(line), err.value.problems


def test_accumulate_beyond_the_epochs_batches_is_refused() -> None:
    """A step never spans two epochs: k larger than the batches of an epoch would not give the asked-for batch."""
    with pytest.raises(ConfigError) as err:
        build(parse(["data.batch_size=500", "trainer.accumulate=4"]))
    assert err.value.problems == ["trainer.accumulate=4 exceeds the 3 batches of an epoch (1078 training samples at "
                                  "data.batch_size=500) and a step never spans two epochs; use trainer.accumulate=3 "
                                  "or less, or a smaller data.batch_size"]
    build(parse(["data.batch_size=500", "trainer.accumulate=3"]))  # the last group of 3 batches: fine
