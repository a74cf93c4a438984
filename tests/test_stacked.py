"""The stacked trainer (run/stacked.py, core/stack_*.py) against the ordinary engine, member by member: every
per-member key of issue 21, all seven optimizers, early stopping, a diverging member, a resumed stack whose members
start at different epochs, dropout per member, and one stack = one set of kernels (the op count per step at N = 1
and N = 16)."""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import load_scalars, parse, run
from torch.utils._python_dispatch import TorchDispatchMode

from dltrain.run.stacked import Member, train_stack, why_alone

SMALL = ["model.hidden=[32]", "trainer.log_every_n_steps=0"]
TOLERANCE = 1e-5  # relative, per epoch's train/val loss (the bound; measured largest: in the test's output)


def stacked_and_alone(tmp_path: Path, common: list[str], points: list[list[str]]) -> list[tuple[dict, dict]]:
    """Train `points` as one stack and each alone; (stacked report, ordinary report) per point."""
    members = [Member(parse([*common, *p]), tmp_path / f"stack{i}", [*common, *p]) for i, p in enumerate(points)]
    ended: list[int] = []
    reports = train_stack(members, lambda i, report: ended.append(i))
    assert sorted(ended) == list(range(len(points)))
    with contextlib.redirect_stdout(io.StringIO()):
        alone = [run([*common, *p], tmp_path / f"alone{i}") for i, p in enumerate(points)]
    return list(zip(reports, alone))


def largest_difference(tmp_path: Path, count: int, epochs: int = 3) -> float:
    """The largest relative difference of any epoch's train/val loss (first `epochs`) between the stacked and the
    ordinary run of each point, read back from their TensorBoard event files."""
    worst = 0.0
    for i in range(count):
        stacked, alone = load_scalars(tmp_path / f"stack{i}"), load_scalars(tmp_path / f"alone{i}")
        for tag in ("train/loss", "val/loss"):
            assert [s for s, _ in stacked[tag]] == [s for s, _ in alone[tag]], tag  # one value per epoch, the same
            for (_, a), (_, b) in zip(stacked[tag][:epochs], alone[tag][:epochs]):
                worst = max(worst, abs(a - b) / max(abs(b), 1e-12))
    return worst


def same_ending(stacked: dict, alone: dict) -> None:
    for key in ("status", "epochs", "best_epoch"):
        assert stacked[key] == alone[key], key
    # the reason, to its numbers: "... (best 0.0900713 at epoch 14)" may differ in the 6th digit of the best value
    assert re.sub(r"[0-9.e-]+", "#", stacked["stop_reason"]) == re.sub(r"[0-9.e-]+", "#", alone["stop_reason"])
    for key, value in alone["test"].items():
        assert stacked["test"][key] == pytest.approx(value, abs=1e-3), key
    assert stacked["launcher"] == "vectorized" and "launcher" not in alone


def follows_its_own_runs(tmp_path: Path, common: list[str], points: list[list[str]], epochs: int = 3,
                         label: str = "") -> list[tuple[dict, dict]]:
    """Train `points` stacked and alone; every epoch's loss within TOLERANCE (the largest difference printed with
    `label`), the same ending for each point. Returns the (stacked, alone) reports."""
    pairs = stacked_and_alone(tmp_path, common, points)
    worst = largest_difference(tmp_path, len(points), epochs)
    if label:
        print(f"largest relative difference of an epoch's loss, {label}: {worst:.2e}")
    assert worst < TOLERANCE
    for stacked, alone in pairs:
        same_ending(stacked, alone)
    return pairs


def test_every_per_member_key_of_an_mlp_stack_follows_its_own_run(tmp_path: Path) -> None:
    common = [*SMALL, "trainer.max_epochs=3", "optim=adam"]
    points = [
        ["optim.lr=0.003"],
        ["optim.lr=0.01", "optim.betas=[0.8,0.99]", "optim.eps=1e-6", "optim.weight_decay=1e-3"],
        ["trainer.seed=1", "sched=cosine", "sched.warmup=10", "sched.interval=step"],  # own split, batches, init
        ["sched=step", "reg.l1=1e-4", "reg.l2=1e-3"],
        ["reg.grad_clip=0.05", "label_smoothing=0.1", "model.init=kaiming_normal"],
        ["model.init=normal", "+model.init_args={std:0.05}", "trainer.max_epochs=2"],
        ["early_stopping.patience=1", "early_stopping.min_delta=0.5", "sched=exponential"],
    ]
    pairs = follows_its_own_runs(tmp_path, common, points, label="mlp stack")
    assert pairs[6][0]["stop_reason"].startswith("early stopping")  # that member stopped early, as its own run did


def test_a_cnn_stack_with_momentum_follows_its_own_runs(tmp_path: Path) -> None:
    common = ["model=cnn", "optim=momentum", "trainer.max_epochs=3", "trainer.log_every_n_steps=0"]
    points = [["optim.lr=0.05"], ["optim.momentum=0.5", "optim.dampening=0.2", "trainer.seed=2"],
              ["reg.grad_clip=0.5", "sched=inverse_time", "label_smoothing=0.05"]]
    follows_its_own_runs(tmp_path, common, points, label="cnn stack")


OWN_OPTIONS = {  # each optimizer's numeric options, one point per line of values
    "sgd": [["optim.lr=0.05"], ["optim.lr=0.2", "optim.weight_decay=1e-3"]],
    "momentum": [["optim.momentum=0.8", "optim.nesterov=true"], ["optim.lr=0.01", "optim.nesterov=true"]],
    "adam": [["optim.amsgrad=true"], ["optim.amsgrad=true", "optim.betas=[0.5,0.9]", "optim.eps=1e-4"]],
    "adamw": [["optim.weight_decay=0.1"], ["optim.lr=0.01", "optim.weight_decay=0"]],
    "rmsprop": [["optim.alpha=0.9", "optim.momentum=0.5"], ["optim.eps=1e-4", "optim.centered=false"]],
    "adagrad": [["optim.lr_decay=0.01"], ["optim.initial_accumulator_value=0.1", "optim.eps=1e-6"]],
    "adadelta": [["optim.rho=0.5"], ["optim.eps=1e-4", "optim.weight_decay=1e-3"]],
}


@pytest.mark.parametrize("name", sorted(OWN_OPTIONS))
def test_each_optimizer_in_a_stack_follows_its_own_runs(tmp_path: Path, name: str) -> None:
    common = [*SMALL, "trainer.max_epochs=2", f"optim={name}", "optim.exclude_bias_and_norm=true"]
    follows_its_own_runs(tmp_path, common, OWN_OPTIONS[name], epochs=2)


@pytest.mark.slow
def test_the_default_digits_sweep_ends_as_its_runs_do(tmp_path: Path) -> None:
    """20 epochs of the default run: the same best epoch, stop epoch and reason, test metrics within 1e-3."""
    points = [["optim.lr=0.01"], ["optim.lr=0.1", "trainer.seed=1"], ["optim.lr=0.3"]]
    for stacked, alone in stacked_and_alone(tmp_path, ["trainer.log_every_n_steps=0"], points):
        same_ending(stacked, alone)


def test_a_diverging_member_is_frozen_and_leaves_the_others_exact(tmp_path: Path) -> None:
    common = [*SMALL, "trainer.max_epochs=3", "optim=sgd"]
    pairs = stacked_and_alone(tmp_path, common, [["optim.lr=0.1"], ["optim.lr=1e6"], ["optim.lr=0.05"]])
    assert pairs[1][0]["status"] == pairs[1][1]["status"] == "diverged"
    for stacked, alone in (pairs[0], pairs[2]):
        same_ending(stacked, alone)
        assert stacked["final"]["val/loss"] == pytest.approx(alone["final"]["val/loss"], rel=TOLERANCE)


def test_a_stack_resumes_members_that_stopped_at_different_epochs(tmp_path: Path) -> None:
    """As after a kill between two members' checkpoint writes: member 0 saved epoch 1, member 1 epoch 2. The new
    stack resumes each from its own last.pt and ends as the uninterrupted runs."""
    common = [*SMALL, "optim=adam"]
    points = [["optim.lr=0.003"], ["optim.lr=0.01", "trainer.seed=1"]]
    first = [Member(parse([*common, *p, f"trainer.max_epochs={i + 1}"]), tmp_path / f"stack{i}", []) for i, p in
             enumerate(points)]
    train_stack(first, lambda i, r: None)
    assert [json.loads((m.run_dir / "metrics.json").read_text())["epochs"] for m in first] == [1, 2]
    again = [Member(parse([*common, *p, "trainer.max_epochs=4", f"trainer.resume={tmp_path / f'stack{i}'}"]),
                    tmp_path / f"stack{i}", []) for i, p in enumerate(points)]
    reports = train_stack(again, lambda i, r: None)
    with contextlib.redirect_stdout(io.StringIO()):
        alone = [run([*common, *p, "trainer.max_epochs=4"], tmp_path / f"alone{i}") for i, p in enumerate(points)]
    for stacked, plain in zip(reports, alone):
        assert stacked["epochs"] == 4
        assert stacked["final"]["val/loss"] == pytest.approx(plain["final"]["val/loss"], rel=TOLERANCE)
        assert stacked["test"]["test/acc"] == pytest.approx(plain["test"]["test/acc"], abs=1e-3)
    assert [s for s, _ in load_scalars(tmp_path / "stack0")["train/loss"]] == [1, 2, 3, 4]  # one value per epoch


def test_dropout_keeps_each_members_rate_with_masks_drawn_apart() -> None:
    from torch import nn

    from dltrain.core.stack_model import StackedModel

    models = [nn.Sequential(nn.Linear(4, 4), nn.Dropout(p)) for p in (0.1, 0.5, 0.5, 0.0)]
    stack = StackedModel(models)
    with torch.no_grad():
        for p in stack.params:
            p.copy_(torch.ones_like(p))
    out = stack(torch.ones(4, 20_000, 4))  # each member's output is 5 where kept, 0 where dropped
    dropped = (out == 0).float().mean(dim=(1, 2))
    assert dropped.tolist() == pytest.approx([0.1, 0.5, 0.5, 0.0], abs=0.01)
    both = ((out[1] == 0) & (out[2] == 0)).float().mean()
    assert both.item() == pytest.approx(0.25, abs=0.01)  # independent masks: P(both dropped) = 0.5 * 0.5
    assert torch.allclose(out[3], torch.full_like(out[3], 5.0))  # rate 0: untouched
    assert stack.eval()(torch.ones(4, 10, 4)).eq(5.0).all()  # evaluation: no dropout


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [1, 2], ids=["one split", "a split per seed"])
def test_a_stack_is_one_set_of_kernels_whatever_its_size(tmp_path: Path, seeds: int) -> None:
    """The aten ops of a training step at N = 1 (or 2 seeds: N = 2) and N = 16: the same count."""
    from dltrain.core.stack_engine import permutations, train_epoch
    from dltrain.run.stack_build import build_stack, epoch_lrs
    from dltrain.run.train import open_run

    counts = []
    for n in (seeds, 16):
        for i in range(n):
            (tmp_path / f"{n}-{i}").mkdir()
        runs = [open_run(parse([*SMALL, f"optim.lr={0.01 * (i + 1)}", f"trainer.seed={i % seeds}", "reg.l2=1e-4",
                                "reg.grad_clip=1", "optim=adam"]), tmp_path / f"{n}-{i}", torch.device("cpu"), [])
                for i in range(n)]
        stack = build_stack(runs)
        lrs = epoch_lrs(runs, stack.steps_per_epoch, stack.device)
        with OpCounter() as counter:
            train_epoch(stack.model, stack.optimizer, stack.task, stack.train, stack.settings, [0] * n, lrs,
                        stack.active)
        with OpCounter() as orders:  # the members' sample orders: N permutations once per epoch, not per step
            permutations(len(stack.train), stack.settings.seeds, [0] * n, stack.device)
        counts.append((counter.count - orders.count) / stack.steps_per_epoch)
    assert counts[0] == counts[1], counts


def test_why_alone_names_what_a_stack_cannot_do() -> None:
    assert why_alone(parse(SMALL)) is None
    assert "batch_norm" in why_alone(parse([*SMALL, "model.batch_norm=true"]))
    assert "model=lstm" in why_alone(parse(["model=lstm", "data=digit_rows"]))
    assert "trainer.ema" in why_alone(parse([*SMALL, "trainer.ema.decay=0.9"]))
    assert "accumulate" in why_alone(parse([*SMALL, "trainer.accumulate=2"]))
    assert why_alone(parse(["data=mnist"])) is None  # its augment keys are all off: nothing to augment
    assert "data.augment" in why_alone(parse(["data=mnist", "data.augment.flip=true"]))


def test_the_memory_cap_counts_weights_states_activations_and_own_data(tmp_path: Path, capsys) -> None:
    from dltrain.run.stack_build import member_bytes, memory_cap
    from dltrain.run.train import open_run

    runs = []
    for i in range(4):
        (tmp_path / str(i)).mkdir()
        runs.append(open_run(parse([*SMALL, f"trainer.seed={i % 2}"]), tmp_path / str(i), torch.device("cpu"), []))
    params = sum(p.numel() * 4 for p in runs[0].parts.model.parameters())  # 64*32+32 + 32*10+10 floats
    shared, own = member_bytes(runs[0], False), member_bytes(runs[0], True)
    assert shared == 8 * params + 3 * 64 * (32 + 10) * 4
    data = sum(s.x.numel() * 4 + s.y.numel() * 8 for s in runs[0].splits[:2])  # float32 images, int64 labels
    assert own - shared == data
    assert memory_cap(runs, torch.device("cpu"), free=2 * 4 * own) == 4  # all fit: no line
    assert memory_cap(runs, torch.device("cpu"), free=2 * 3 * own) == 3
    assert "stacks of at most 3" in capsys.readouterr().out
    assert memory_cap(runs, torch.device("cpu"), free=0) == 1


def test_the_last_member_of_a_stack_goes_on_alone_and_ends_as_its_own_run(tmp_path: Path) -> None:
    """Members of 1, 2 and 4 epochs: the stack of 3 loses one member per epoch; the last trains its epochs 3 and 4
    with the ordinary engine, from its synced weights and Adam state, and ends as the run trained alone."""
    common = [*SMALL, "optim=adam"]
    points = [["trainer.max_epochs=1"], ["trainer.max_epochs=2", "optim.lr=0.01"],
              ["trainer.max_epochs=4", "optim.lr=0.003", "trainer.seed=1"]]
    follows_its_own_runs(tmp_path, common, points, epochs=4)
    assert [s for s, _ in load_scalars(tmp_path / "stack2")["train/loss"]] == [1, 2, 3, 4]


def test_each_member_logs_its_running_loss_at_the_steps_its_own_run_does(tmp_path: Path) -> None:
    """trainer.log_every_n_steps counts each member's own optimizer steps across epochs (5 here, 17 steps an
    epoch): the stacked member's step-loss history has the steps and values of its run trained alone."""
    from dltrain.core.tags import STEP_LOSS

    common = ["model.hidden=[32]", "trainer.log_every_n_steps=5", "trainer.max_epochs=3"]
    stacked_and_alone(tmp_path, common, [["optim.lr=0.05"], ["optim.lr=0.2", "trainer.seed=1"]])
    for i in range(2):
        ours, theirs = (load_scalars(tmp_path / f"{side}{i}")[STEP_LOSS] for side in ("stack", "alone"))
        assert [s for s, _ in ours] == [s for s, _ in theirs] == list(range(5, 51, 5))
        assert [v for _, v in ours] == pytest.approx([v for _, v in theirs], rel=TOLERANCE)
