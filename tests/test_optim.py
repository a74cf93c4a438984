"""Optimizers: the table builds each torch class with the YAML's defaults, parse_optimizer reports every bad
option as one line (ours and torch's range checks), exclude_bias_and_norm really exempts 1-D parameters."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dltrain.core.optim import OPTIMIZERS, ParamGroup, build_optimizer, optimizer_class, parse_optimizer
from dltrain.core.registry import ConfigError
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
