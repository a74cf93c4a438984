"""Schedules against their closed forms at several t, for both intervals, staircase and warm-up."""
from __future__ import annotations

import math

import pytest

from dltrain.registry import ConfigError
from dltrain.sched import build_schedule
from tests.conftest import compose

LR0 = 0.2


def sched(node: dict, total: int = 100):
    return build_schedule(node, LR0, total)


@pytest.mark.parametrize("t", [0, 1, 3, 7, 25])
def test_exponential_and_inverse_time(t: int) -> None:
    exp = sched({"name": "exponential", "k": 0.3, "decay_steps": 4})
    inv = sched({"name": "inverse_time", "k": 0.5, "decay_steps": 4})
    assert exp(t) == pytest.approx(LR0 * math.exp(-0.3 * t / 4))
    assert inv(t) == pytest.approx(LR0 / (1 + 0.5 * t / 4))


@pytest.mark.parametrize("t", [0, 3, 4, 5, 11, 12])
def test_staircase_floors_t(t: int) -> None:
    exp = sched({"name": "exponential", "k": 0.3, "decay_steps": 4, "staircase": True})
    inv = sched({"name": "inverse_time", "k": 0.5, "decay_steps": 4, "staircase": True})
    assert exp(t) == pytest.approx(LR0 * math.exp(-0.3 * (t // 4)))
    assert inv(t) == pytest.approx(LR0 / (1 + 0.5 * (t // 4)))


def test_step_switches_at_the_boundary_like_torch() -> None:
    absolute = sched({"name": "step", "boundaries": [3, 6], "values": [1.0, 0.5, 0.1]})
    assert [absolute(t) for t in range(8)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.1, 0.1]
    relative = sched({"name": "step", "boundaries": [2, 4], "values": None, "gamma": 0.5})
    assert [relative(t) for t in (0, 1, 2, 3, 4, 9)] == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05, 0.05])


def test_step_matches_torch_multistep_lr() -> None:
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR0)
    torch_sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 5], gamma=0.1)
    ours = sched({"name": "step", "boundaries": [3, 5], "values": None, "gamma": 0.1})
    for t in range(8):
        assert opt.param_groups[0]["lr"] == pytest.approx(ours(t))
        opt.step()
        torch_sched.step()


@pytest.mark.parametrize("t", [0, 25, 50, 100, 120])
def test_cosine(t: int) -> None:
    cos = sched({"name": "cosine", "min_lr": 0.02}, total=100)
    assert cos(t) == pytest.approx(0.02 + (LR0 - 0.02) * 0.5 * (1 + math.cos(math.pi * min(t, 100) / 100)))


def test_warmup_ramps_linearly_then_follows_the_schedule() -> None:
    warm = sched({"name": "exponential", "k": 0.1, "warmup": 4})
    plain = sched({"name": "exponential", "k": 0.1})
    for t in range(4):
        assert warm(t) == pytest.approx(plain(t) * (t + 1) / 5)
    for t in (4, 5, 10):
        assert warm(t) == pytest.approx(plain(t))


@pytest.mark.parametrize("node, message", [
    ({"name": "step", "boundaries": [3, 6], "values": [1.0, 0.5]}, "len(boundaries) + 1 = 3"),
    ({"name": "step", "boundaries": [6, 3]}, "strictly increasing"),
    ({"name": "exponential", "decay_steps": 0}, "decay_steps=0 must be > 0"),
    ({"name": "inverse_time", "k": -1}, "k=-1 must be >= 0"),
    ({"name": "constant", "interval": "batch"}, "must be 'epoch' or 'step'"),
    ({"name": "cosine", "warmup": -2}, "warmup=-2"),
])
def test_bad_schedules_name_the_problem(node: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        sched(node)


def test_step_interval_changes_lr_every_optimizer_step(tmp_path) -> None:
    """End to end: with interval=step the lr logged per epoch follows t = optimizer steps done."""
    from tests.conftest import load_scalars, run

    # digits: 1078 train samples at batch 539 -> exactly 2 steps per epoch
    run(["trainer.max_epochs=3", "data.batch_size=539", "sched=exponential", "sched.interval=step", "sched.k=0.5",
         "model.hidden=[16]"], tmp_path)
    lrs = [v for _, v in load_scalars(tmp_path)["lr"]]
    assert lrs == pytest.approx([0.1 * math.exp(-0.5 * t) for t in (0, 2, 4)], rel=1e-6)


def test_every_schedule_yaml_builds() -> None:
    for name in ("constant", "step", "exponential", "inverse_time", "cosine"):
        node = compose([f"sched={name}"])["sched"]
        assert sched(node)(0) > 0
