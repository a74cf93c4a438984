"""The models' explicit contracts: declared traits, optimizer groups, the shared Linear stack and init rules."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dltrain.core.optim import ParamGroup
from dltrain.core.registry import ConfigError
from dltrain.models import MODELS, Generative, ModelRegistry, ModelTraits, layers, model_traits, param_groups
from dltrain.models.layers import init_weights, linear_stack
from tests.conftest import compose

DIGITS = (1, 8, 8)  # scikit-learn digits: the default data


def build_default(name: str, in_shape: tuple[int, ...] = DIGITS, num_outputs: int = 10, **overrides) -> nn.Module:
    """Family `name` with its default YAML (conf/model/<name>.yaml) plus `overrides`."""
    node = compose([f"model={name}"])["model"]
    node.update(overrides)
    return MODELS.build(MODELS.parse(node), in_shape=in_shape, num_outputs=num_outputs)


def test_traits_are_declared_at_registration() -> None:
    assert model_traits("cnn") == ModelTraits(channels_last=True)
    assert model_traits("resnet") == ModelTraits(channels_last=True)
    assert model_traits("gan") == ModelTraits(generative=True)
    for name in ("mlp", "autoencoder", "rnn", "lstm", "gru"):
        assert model_traits(name) == ModelTraits(), name
    assert not hasattr(build_default("cnn"), "channels_last")  # no attribute to probe any more
    with pytest.raises(ConfigError, match="unknown model 'transformer'"):
        model_traits("transformer")


def test_an_unknown_or_non_bool_trait_fails_at_registration() -> None:
    registry = ModelRegistry("model")
    with pytest.raises(TypeError, match="unknown trait.*channel_last; valid: channels_last, generative"):
        registry.register("typo", channel_last=True)
    with pytest.raises(TypeError, match="generative must be True or False"):
        registry.register("odd", generative="yes")
    registry.register("plain")(lambda *, in_shape, num_outputs: nn.Identity())  # no traits: all off
    assert registry.traits("plain") == {}


def test_runtime_arguments_are_not_config_keys() -> None:
    assert set(MODELS.runtime) == {"in_shape", "num_outputs", "vocab_size", "per_step"}
    assert not {"vocab_size", "per_step"} & set(MODELS.config_keys("lstm"))
    with pytest.raises(ConfigError, match="model.vocab_size is not an option of model=lstm"):
        MODELS.parse({"name": "lstm", "vocab_size": 7})


def test_gan_param_groups_have_the_configured_scales_and_cover_every_parameter_once() -> None:
    model = build_default("gan", g_lr_scale=0.5, d_lr_scale=2.0)
    assert isinstance(model, Generative)
    groups = param_groups(model, model_traits("gan"))
    assert all(isinstance(g, ParamGroup) for g in groups)
    assert [g.lr_scale for g in groups] == [0.5, 2.0]  # generator, then discriminator
    assert [id(p) for p in groups[0].params] == [id(p) for p in model.generator.parameters()]
    ids = [id(p) for g in groups for p in g.params]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)


def test_other_models_get_one_group_of_all_parameters() -> None:
    model = build_default("mlp")
    assert not isinstance(model, Generative)
    (group,) = param_groups(model, model_traits("mlp"))
    assert group.lr_scale == 1.0
    assert [id(p) for p in group.params] == [id(p) for p in model.parameters()]
    with pytest.raises(TypeError, match="registered as generative"):
        param_groups(model, ModelTraits(generative=True))


# sum(p.numel()) with the default YAML, in_shape=(1, 8, 8), num_outputs=10: measured on the pre-refactor code
# (each family's own Linear loop, before layers.linear_stack); the initial state_dicts under torch.manual_seed(0)
# also hashed identical before and after.
PRE_REFACTOR_PARAMS = [
    ("mlp", {}, 17226),
    ("mlp", {"batch_norm": True, "dropout": 0.2}, 17418),
    ("gan", {}, 107457),
    ("autoencoder", {}, 70368),
    ("cnn", {}, 21386),
]


@pytest.mark.parametrize("name, overrides, count", PRE_REFACTOR_PARAMS)
def test_shared_linear_stack_keeps_the_parameter_counts(name: str, overrides: dict, count: int) -> None:
    assert sum(p.numel() for p in build_default(name, **overrides).parameters()) == count


def test_linear_stack_layout() -> None:
    stack = linear_stack([6, 5, 4, 3], "leaky_relu", slope=0.2, dropout=0.1, batch_norm=True)
    assert [type(m) for m in stack] == [nn.Linear, nn.BatchNorm1d, nn.LeakyReLU, nn.Dropout] * 2 + [nn.Linear]
    assert stack[0].bias is None and stack[-1].bias is not None  # BN's shift replaces hidden biases only
    assert stack[2].negative_slope == 0.2
    assert [type(m) for m in linear_stack([6, 3], "relu")] == [nn.Linear]
    with pytest.raises(ValueError, match="needs an input and an output width"):
        linear_stack([6], "relu")


def norm_layers() -> tuple[nn.Module, ...]:
    """Fresh public norm layers with learnable scale and shift (weight 1, bias 0 as built)."""
    return (nn.BatchNorm1d(4), nn.BatchNorm2d(3), nn.BatchNorm3d(3), nn.InstanceNorm2d(3, affine=True),
            nn.LayerNorm(4), nn.GroupNorm(1, 3))


@pytest.mark.parametrize("scheme, args", [("normal", {"std": 0.5}), ("uniform", {}), ("ones", {}),
                                          ("constant", {"val": 0.5}), ("kaiming_normal", {}), ("xavier_uniform", {})])
def test_init_keeps_norm_layers_at_one_and_zero(scheme: str, args: dict) -> None:
    torch.manual_seed(0)
    norms = norm_layers()
    model = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(3, 3, 3), *norms)
    init_weights(model, scheme, args)
    for norm in norms:
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0), type(norm).__name__
    assert torch.all(model[0].bias == 0) and torch.all(model[1].bias == 0)
    if scheme in ("ones", "constant"):
        assert torch.all(model[0].weight == (1.0 if scheme == "ones" else 0.5))
    mlp = build_default("mlp", batch_norm=True, init=scheme, init_args=args)
    bns = [m for m in mlp.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)


def test_a_failing_init_is_reported_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def noisy(tensor: torch.Tensor, std: float = 1.0) -> torch.Tensor:
        raise ValueError(f"std={std} is not usable\nsecond line of a long torch message")

    monkeypatch.setitem(layers.INITS, "normal", noisy)
    with pytest.raises(ConfigError) as err:
        init_weights(nn.Linear(2, 2), "normal", {"std": -1.0})
    assert str(err.value) == "init=normal failed on Linear.weight: std=-1.0 is not usable"
