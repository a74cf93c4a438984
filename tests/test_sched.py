"""Schedules against their closed forms at several t, for both intervals, staircase and warm-up; parse errors."""
from __future__ import annotations

import math
import re
from typing import Annotated

import pytest

from dltrain.core.registry import ConfigError
from dltrain.core.rules import Positive
from dltrain.core.sched import SCHEDULES, ScheduleSpec, build_schedule, parse_schedule, register_schedule
from tests.conftest import compose

LR0 = 0.2


def sched(node: dict, total: int = 100):
    return build_schedule(parse_schedule(node, LR0), LR0, total)


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


def test_parse_gives_a_spec_with_interval_and_warmup_inside() -> None:
    spec = parse_schedule({"name": "step", "interval": "step", "warmup": 3, "boundaries": [5]}, LR0)
    assert spec == ScheduleSpec("step", {"boundaries": [5]}, interval="step", warmup=3)
    assert parse_schedule({"name": "cosine"}, LR0) == ScheduleSpec("cosine", {}, interval="epoch", warmup=0)


W = 4  # warm-up length in the warm-up tests (interval units)


def ramp(t: int) -> float:
    """The warm-up's closed form: lr0 * (t + 1) / (W + 1) for t < W."""
    return LR0 * (t + 1) / (W + 1)


@pytest.mark.parametrize("node", [
    {"name": "constant"}, {"name": "step", "boundaries": [3]}, {"name": "exponential", "k": 0.1},
    {"name": "inverse_time", "k": 0.5}, {"name": "cosine", "min_lr": 0.02},
])
def test_warmup_ramps_linearly_to_lr0_at_w(node: dict) -> None:
    warm = sched({**node, "warmup": W}, total=20)
    assert [warm(t) for t in range(W)] == pytest.approx([ramp(t) for t in range(W)])
    assert [warm(t) for t in range(W)] == pytest.approx([LR0 * 0.2, LR0 * 0.4, LR0 * 0.6, LR0 * 0.8])
    assert warm(W) == pytest.approx(LR0)


@pytest.mark.parametrize("k", [0, 1, 2, 5, 9])
def test_warmup_then_each_decay_starts_from_its_own_zero(k: int) -> None:
    """After warm-up the decay is evaluated at t - W: boundaries and decay_steps count from the warm-up's end."""
    t = W + k
    assert sched({"name": "constant", "warmup": W})(t) == pytest.approx(LR0)
    step = sched({"name": "step", "warmup": W, "boundaries": [3, 6], "values": None, "gamma": 0.5})
    assert step(t) == pytest.approx(LR0 * 0.5 ** (int(k >= 3) + int(k >= 6)))
    exp = sched({"name": "exponential", "warmup": W, "k": 0.3, "decay_steps": 2})
    assert exp(t) == pytest.approx(LR0 * math.exp(-0.3 * k / 2))
    stair = sched({"name": "exponential", "warmup": W, "k": 0.3, "decay_steps": 2, "staircase": True})
    assert stair(t) == pytest.approx(LR0 * math.exp(-0.3 * (k // 2)))
    inv = sched({"name": "inverse_time", "warmup": W, "k": 0.5})
    assert inv(t) == pytest.approx(LR0 / (1 + 0.5 * k))


def test_warmup_step_boundaries_count_from_the_end_of_warmup() -> None:
    warm = sched({"name": "step", "warmup": 2, "boundaries": [3], "values": [1.0, 0.5]})
    # ramps to values[0] (the rate the decay starts at), switches 3 units after the warm-up ends (t = 5)
    assert [warm(t) for t in range(8)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5])


@pytest.mark.parametrize("total", [10, 37, 100])
def test_warmup_cosine_spans_the_rest_of_the_run(total: int) -> None:
    cos = sched({"name": "cosine", "min_lr": 0.02, "warmup": W}, total=total)
    length = total - W  # the cosine's length: the run after the warm-up
    assert cos(W) == pytest.approx(LR0)
    assert cos(total) == pytest.approx(0.02, abs=1e-12)
    assert cos(total + 7) == pytest.approx(0.02, abs=1e-12)
    for t in (W + 1, W + length // 2, total - 1):
        assert cos(t) == pytest.approx(0.02 + (LR0 - 0.02) * 0.5 * (1 + math.cos(math.pi * (t - W) / length)))
    assert cos(W + length / 2) == pytest.approx((LR0 + 0.02) / 2)  # half-way at the middle of the decay
    assert all(cos(t) >= cos(t + 1) for t in range(W, total + 2))  # never rises after the warm-up


def test_zero_warmup_is_no_warmup() -> None:
    for node in ({"name": "exponential", "k": 0.1}, {"name": "cosine"}):
        warm, plain = sched({**node, "warmup": 0}), sched(node)
        assert [warm(t) for t in range(10)] == [plain(t) for t in range(10)]


@pytest.mark.parametrize("node, message", [
    ({"name": "step", "boundaries": [3, 6], "values": [1.0, 0.5]}, "len(boundaries) + 1 = 3"),
    ({"name": "step", "boundaries": [6, 3]}, "strictly increasing"),
    ({"name": "exponential", "decay_steps": 0}, "decay_steps=0 must be > 0"),
    ({"name": "inverse_time", "k": -1}, "k=-1 must be >= 0"),
    ({"name": "constant", "interval": "batch"}, "must be 'epoch' or 'step'"),
    ({"name": "cosine", "warmup": -2}, "warmup=-2"),
    ({"name": "cosine", "warmup": True}, "sched.warmup=True must be an integer >= 0"),
    ({"name": "cosine", "warmup": 1.5}, "sched.warmup=1.5 must be an integer >= 0"),
    ({"name": "cosine", "min_lr": 0.5}, "sched.min_lr=0.5 must be in [0, optim.lr=0.2]"),
    ({"name": "step", "boundaries": [3], "values": [0.1, -1.0]}, "must be >= 0"),
    ({"name": "linear"}, "unknown sched 'linear'; valid: constant, cosine, exponential, inverse_time, step"),
])
def test_bad_schedules_name_the_problem(node: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        sched(node)


def test_parse_collects_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        parse_schedule({"name": "constant", "interval": "x", "warmup": -1}, LR0)
    assert err.value.problems == ["sched.interval='x' must be 'epoch' or 'step'",
                                  "sched.warmup=-1 must be an integer >= 0"]
    assert str(err.value).splitlines() == err.value.problems  # one line per problem


def test_parse_collects_key_type_and_value_problems_together() -> None:
    node = {"name": "step", "boundaries": [6, 3], "values": [1.0, 0.5], "foo": 1, "interval": "batch"}
    with pytest.raises(ConfigError) as err:
        parse_schedule(node, LR0)
    assert len(err.value.problems) == 4, err.value.problems
    text = str(err.value)
    for part in ("sched.foo is not an option", "'batch' must be 'epoch' or 'step'", "strictly increasing",
                 "needs len(boundaries) + 1 = 3"):
        assert part in text
    with pytest.raises(ConfigError) as err:
        parse_schedule({"name": "exponential", "k": "fast", "decay_steps": 0, "warmup": "2"}, LR0)
    assert len(err.value.problems) == 2 and "sched.k='fast' has the wrong type" in str(err.value)  # types first
    assert "sched.warmup=2 must be an integer >= 0" in str(err.value)


def test_an_unknown_key_lists_interval_and_warmup_among_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse_schedule(compose(["sched=step", "+sched.foo=1"])["sched"], LR0)
    assert err.value.problems == [
        "sched.foo is not an option of sched=step; valid: interval, warmup, boundaries, values, gamma"]
    with pytest.raises(ConfigError, match=re.escape("sched.warm_up is not an option of sched=cosine; "
                                                   "valid: interval, warmup, min_lr")):
        parse_schedule({"name": "cosine", "warm_up": 2}, LR0)


def test_step_interval_changes_lr_every_optimizer_step(tmp_path) -> None:
    """End to end: with interval=step the lr logged per epoch follows t = optimizer steps done."""
    from tests.conftest import load_scalars, run

    # digits: 1078 train samples at batch 539 -> exactly 2 steps per epoch
    run(["trainer.max_epochs=3", "data.batch_size=539", "sched=exponential", "sched.interval=step", "sched.k=0.5",
         "model.hidden=[16]"], tmp_path)
    lrs = [v for _, v in load_scalars(tmp_path)["z_more/lr"]]
    assert lrs == pytest.approx([0.1 * math.exp(-0.5 * t) for t in (0, 2, 4)], rel=1e-6)


def test_every_schedule_yaml_builds() -> None:
    for name in ("constant", "step", "exponential", "inverse_time", "cosine"):
        node = compose([f"sched={name}"])["sched"]
        assert sched(node)(0) > 0


@pytest.fixture
def user_schedules(monkeypatch) -> None:
    """rsqrt (and a broken one) registered as a user's project would, for this test only."""
    for table in ("_builders", "_traits", "_checks"):
        monkeypatch.setattr(SCHEDULES, table, dict(getattr(SCHEDULES, table)))

    @register_schedule("rsqrt")
    def rsqrt(*, lr0: float, total: int, timescale: Annotated[float, Positive]):
        return lambda s: lr0 / math.sqrt(1.0 + s / timescale)

    register_schedule("not_a_function")(lambda *, lr0, total: lr0)


def test_a_user_schedule_gets_the_warm_up_and_its_keys_are_checked(user_schedules) -> None:
    lr_at = sched({"name": "rsqrt", "interval": "step", "warmup": 3, "timescale": 2.0})
    assert [lr_at(t) for t in range(3)] == pytest.approx([LR0 / 4, LR0 / 2, LR0 * 3 / 4])  # the linear warm-up
    assert [lr_at(t) for t in (3, 5, 9)] == pytest.approx([LR0, LR0 / math.sqrt(2), LR0 / 2])  # s = t - 3
    with pytest.raises(ConfigError) as err:
        parse_schedule({"name": "rsqrt", "timescale": 0, "k": 1}, LR0)
    assert err.value.problems == ["sched.k is not an option of sched=rsqrt; valid: interval, warmup, timescale",
                                  "sched.timescale=0 must be > 0"]
    with pytest.raises(ConfigError, match=r"^sched=not_a_function built a float, not a function lr_at\(t\)$"):
        parse_schedule({"name": "not_a_function"}, LR0)
