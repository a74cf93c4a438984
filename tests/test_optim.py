"""Optimizers: the table builds each torch class with the YAML's defaults, parse_optimizer reports every bad
option as one line (ours and torch's range checks), exclude_bias_and_norm really exempts 1-D parameters."""
from __future__ import annotations

from typing import Annotated

import pytest
import torch
from torch import nn

from dltrain.core.optim import (
    OPTIMIZERS,
    ParamGroup,
    build_optimizer,
    optimizer_class,
    parse_optimizer,
    register_optimizer,
)
from dltrain.core.registry import ConfigError
from dltrain.core.rules import Range
from dltrain.run.config import config_dir
from tests.conftest import compose

CLASSES = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
           "rmsprop": torch.optim.RMSprop, "adadelta": torch.optim.Adadelta, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW}


def optim_node(*overrides: str, name: str = "sgd") -> dict:
    return compose([f"optim={name}", *overrides])["optim"]


def problems(node: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_optimizer(node)
    return err.value.problems


def test_the_seven_names_are_registered_and_have_yaml_files() -> None:
    assert OPTIMIZERS.names() == sorted(CLASSES)
    assert sorted(p.stem for p in (config_dir() / "optim").glob("*.yaml")) == sorted(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_name_builds_its_torch_class_with_the_yaml_defaults(name: str) -> None:
    node = optim_node(name=name)
    model = nn.Linear(3, 2)
    opt = build_optimizer(parse_optimizer(node), [ParamGroup(list(model.parameters()))])
    assert type(opt) is CLASSES[name] is optimizer_class(name)
    (group,) = opt.param_groups
    for key, value in node.items():
        if key not in ("name", "exclude_bias_and_norm"):
            assert group[key] == (tuple(value) if isinstance(value, list) else value), key
    assert "exclude_bias_and_norm" not in group and "lr_scale" not in group


def test_the_yaml_preset_states_the_defaults_once() -> None:
    """A key removed from the node (`~optim.weight_decay`) takes the preset's value: the YAML is the one source."""
    node = optim_node("~optim.weight_decay", "~optim.betas", name="adamw")
    assert "weight_decay" not in node and "betas" not in node
    opt = build_optimizer(parse_optimizer(node), [ParamGroup([nn.Parameter(torch.ones(2))])])
    assert opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert OPTIMIZERS.options("sgd", {}) == {"lr": 0.1, "weight_decay": 0.0, "exclude_bias_and_norm": False}


def test_momentum_is_sgd_with_momentum() -> None:
    assert optimizer_class("momentum") is torch.optim.SGD
    opt = build_optimizer(parse_optimizer(optim_node(name="momentum")), [ParamGroup([nn.Parameter(torch.ones(2))])])
    assert opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ConfigError, match="unknown optim 'lion'; valid: adadelta, adagrad, adam"):
        optimizer_class("lion")


@pytest.mark.parametrize("overrides, name, line", [
    (["+optim.momentum=0.9"], "sgd", "optim.momentum is not an option of optim=sgd; valid: lr, weight_decay"),
    (["optim.lr=fast"], "sgd", "optim.lr='fast' has the wrong type for optim=sgd: expected float"),
    (["optim.lr=-0.1"], "sgd", "optim.lr=-0.1 must be >= 0"),
    (["optim.weight_decay=-0.5"], "adamw", "optim.weight_decay=-0.5 must be >= 0"),
    (["optim.betas=[0.9,1.0]"], "adam", "optim.betas=[0.9, 1.0] must be two values in [0, 1)"),
    (["optim.betas=[0.9]"], "adamw", "optim.betas=[0.9] must be two values in [0, 1)"),
    (["optim.momentum=1.0"], "momentum", "optim.momentum=1.0 must be in [0, 1)"),
    (["optim.momentum=0.0", "optim.nesterov=true"], "momentum", "optim.nesterov needs momentum > 0"),
    (["optim.alpha=1.5"], "rmsprop", "optim.alpha=1.5 must be in [0, 1)"),
    (["optim.rho=1.5"], "adadelta", "optim.rho=1.5 must be in [0, 1]"),
    # torch's own range checks, named by option
    (["optim.eps=-1"], "adam", "optim.eps=-1 is refused by torch.optim.Adam: Invalid epsilon value: -1"),
    (["optim.lr_decay=-0.5"], "adagrad", "optim.lr_decay=-0.5 is refused by torch.optim.Adagrad: Invalid lr_decay"),
    (["optim.momentum=-0.5"], "rmsprop", "optim.momentum=-0.5 is refused by torch.optim.RMSprop: Invalid momentum"),
    # not finite: inf, nan, and a number too large for a float
    (["optim.lr=inf"], "sgd", "optim.lr=inf must be a finite number"),
    (["optim.lr=nan"], "adam", "optim.lr=nan must be a finite number"),
    (["optim.lr=1e309"], "sgd", "optim.lr=inf must be a finite number"),
    (["optim.eps=inf"], "rmsprop", "optim.eps=inf must be a finite number"),
    (["optim.weight_decay=nan"], "adamw", "optim.weight_decay=nan must be a finite number"),
])
def test_a_bad_option_is_one_line(overrides: list[str], name: str, line: str) -> None:
    found = problems(optim_node(*overrides, name=name))
    assert len(found) == 1 and found[0].startswith(line), found


def test_an_integer_too_large_for_a_float_is_refused() -> None:
    node = {**optim_node(), "lr": 10 ** 400}
    assert problems(node) == [f"optim.lr={10 ** 400} must be a finite number"]


def test_every_problem_is_collected() -> None:
    assert len(problems(optim_node("optim.lr=-1", "optim.weight_decay=fast"))) == 2
    found = problems(optim_node("optim.lr=-1", "optim.eps=-1", "optim.lr_decay=-2", "+optim.foo=1", name="adagrad"))
    assert len(found) == 4, found
    assert found[0].startswith("optim.foo is not an option of optim=adagrad")
    assert "optim.lr=-1 must be >= 0" in found
    assert {line.split(" ")[0] for line in found[2:]} == {"optim.eps=-1", "optim.lr_decay=-2"}


def test_a_node_without_a_known_name_is_one_line() -> None:
    assert problems({"lr": 0.1}) == ["optim: missing 'name'; valid: adadelta, adagrad, adam, adamw, momentum, "
                                     "rmsprop, sgd"]
    assert problems({"name": "lion"})[0].startswith("unknown optim 'lion'")


def test_the_registry_checks_keys_and_builds_too() -> None:
    spec = OPTIMIZERS.parse(optim_node(name="adamw"))
    assert type(OPTIMIZERS.build(spec, params=[nn.Parameter(torch.ones(2))])) is torch.optim.AdamW


def bn_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_exclude_bias_and_norm_gives_no_decay_to_one_dim_parameters() -> None:
    net = bn_net()
    linear, norm = net[0], net[1]
    node = optim_node("optim.weight_decay=0.5", "optim.exclude_bias_and_norm=true")
    opt = build_optimizer(parse_optimizer(node), [ParamGroup(list(net.parameters()))])
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.5 and [id(p) for p in decay["params"]] == [id(linear.weight)]
    assert no_decay["weight_decay"] == 0.0
    assert {id(p) for p in no_decay["params"]} == {id(linear.bias), id(norm.weight), id(norm.bias)}
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only weight decay moves anything, w -= lr * weight_decay * w
    after = dict(zip(["w", "b", "gamma", "beta"], net.parameters()))
    assert torch.allclose(after["w"], before[0] * (1 - 0.1 * 0.5))
    for key, old in zip(["b", "gamma", "beta"], before[1:]):
        assert torch.equal(after[key], old), key


def test_weight_decay_applies_to_every_parameter_by_default() -> None:
    net = bn_net()
    groups = [ParamGroup(list(net[0].parameters()), lr_scale=1.0), ParamGroup(list(net[1].parameters()), 0.5)]
    opt = build_optimizer(parse_optimizer(optim_node("optim.weight_decay=0.5")), groups)
    assert len(opt.param_groups) == 2  # one torch group per ParamGroup, in order
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    assert all(g["weight_decay"] == 0.5 and "lr_scale" not in g for g in opt.param_groups)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    gamma_before = net[1].weight.detach().clone()
    opt.step()
    assert torch.allclose(net[1].weight, gamma_before * (1 - 0.1 * 0.5))


def test_split_groups_keep_the_order_of_param_groups() -> None:
    """ParamGroup i becomes torch groups 2i (decayed) and 2i + 1 (no decay), both even when one is empty."""
    gen, disc = nn.Linear(2, 2), nn.BatchNorm1d(2)
    groups = [ParamGroup(list(gen.parameters()), 1.0), ParamGroup(list(disc.parameters()), 0.5)]
    node = optim_node("optim.exclude_bias_and_norm=true", "optim.weight_decay=0.01", name="adamw")
    opt = build_optimizer(parse_optimizer(node), groups)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1, 0, 2]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0, 0.01, 0.0]
    assert all("lr_scale" not in g for g in opt.param_groups)


def test_exclude_bias_and_norm_is_typed() -> None:
    found = problems(optim_node("optim.exclude_bias_and_norm=maybe"))
    assert found == ["optim.exclude_bias_and_norm='maybe' is not a boolean: write true or false"]


class SignSGD(torch.optim.Optimizer):
    """A user's optimizer: w -= lr * sign(grad), reading lr from its groups as dltrain's schedules require."""

    def __init__(self, params, lr: float, weight_decay: float) -> None:
        if lr > 1:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(torch.sign(p.grad), alpha=-group["lr"])


@pytest.fixture
def user_optimizers(monkeypatch) -> None:
    """signsgd (and two broken ones) registered as a user's project would, for this test only."""
    for table in ("_builders", "_traits", "_checks"):
        monkeypatch.setattr(OPTIMIZERS, table, dict(getattr(OPTIMIZERS, table)))

    @register_optimizer("signsgd")
    def signsgd(*, params, lr: float, weight_decay: Annotated[float, Range(le=1)] = 0.0) -> SignSGD:
        return SignSGD(params, lr, weight_decay)

    register_optimizer("no_optimizer")(lambda *, params, lr: "not one")
    register_optimizer("no_lr")(lambda *, params, lr: SignSGDNoLr(params))


class SignSGDNoLr(torch.optim.Optimizer):
    def __init__(self, params) -> None:
        super().__init__(params, {"rate": 0.1})


def test_a_user_optimizer_gets_param_groups_lr_scales_and_exclude_bias_and_norm(user_optimizers) -> None:
    from dltrain.core.engine import set_lr

    net = bn_net()
    groups = [ParamGroup(list(net[0].parameters()), 1.0), ParamGroup(list(net[1].parameters()), 0.5)]
    node = {"name": "signsgd", "lr": 0.1, "weight_decay": 0.5, "exclude_bias_and_norm": True}
    opt = build_optimizer(parse_optimizer(node), groups)
    assert type(opt) is SignSGD is optimizer_class("signsgd", node)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1, 0, 2]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0, 0.5, 0.0]
    set_lr(opt, 0.01, [1.0, 1.0, 0.5, 0.5])  # what the engine does before a step: the schedule's rate * lr_scale
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    w, b, gamma, beta = net.parameters()
    assert torch.allclose(w, before[0] * (1 - 0.01 * 0.5) - 0.01)  # decayed, and moved by the scheduled lr
    assert torch.allclose(b, before[1] - 0.01)  # 1-D: no decay
    assert torch.allclose(gamma, before[2] - 0.005) and torch.allclose(beta, before[3] - 0.005)  # lr_scale 0.5


def test_a_user_optimizers_options_are_checked_as_the_builtins_are(user_optimizers) -> None:
    node = {"name": "signsgd", "lr": 0.1, "weight_decay": 0.0}
    assert problems({**node, "momentum": 0.9}) == [
        "optim.momentum is not an option of optim=signsgd; valid: lr, weight_decay, exclude_bias_and_norm"]
    assert problems({**node, "weight_decay": 2.0}) == ["optim.weight_decay=2.0 must be <= 1"]
    assert problems({**node, "lr": -1}) == ["optim.lr=-1 must be >= 0"]
    assert problems({**node, "lr": 5}) == ["optim.lr=5 is refused by optim=signsgd: Invalid learning rate: 5"]
    assert problems({"name": "signsgd"}) == ["optim=signsgd needs optim.lr"]
    assert problems({"name": "no_optimizer", "lr": 0.1}) == [
        "optim=no_optimizer built a str, not a torch.optim.Optimizer"]
    assert problems({"name": "no_lr", "lr": 0.1})[0].startswith("optim=no_lr: its param groups have no 'lr'")
