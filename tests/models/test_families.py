"""Every model family: right output shapes, a backward pass, and a short real run that lowers the loss."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from dltrain.core.registry import ConfigError
from dltrain.core.tasks import build_task
from dltrain.models import MODELS
from dltrain.run.config import config_dir

# name -> (yaml overrides for a tiny model, input sample shape, task)
CASES = {
    "mlp": ({"hidden": [16]}, (1, 8, 8), "classification"),
    "cnn": ({"channels": [4, 8], "head": [16]}, (1, 8, 8), "classification"),
    "resnet": ({"layers": [1, 1], "widths": [8, 16]}, (3, 16, 16), "classification"),
    "rnn": ({"hidden_size": 16}, (12, 3), "classification"),
    "lstm": ({"hidden_size": 16}, (12, 3), "classification"),
    "gru": ({"hidden_size": 16, "bidirectional": True, "num_layers": 2}, (12, 3), "classification"),
    "autoencoder": ({"hidden": [32], "bottleneck": 8}, (1, 8, 8), "reconstruction"),
    "gan": ({"g_hidden": [32], "d_hidden": [32], "latent_dim": 8}, (1, 8, 8), "adversarial"),
}


def build(name: str, in_shape: tuple[int, ...], **extra) -> torch.nn.Module:
    """The family's YAML plus CASES plus `extra`; run-time keys of `extra` (vocab_size, ...) go to build()."""
    node = OmegaConf.to_container(OmegaConf.load(config_dir() / "model" / f"{name}.yaml"))
    node.update(CASES[name][0])
    runtime = {k: extra.pop(k) for k in list(extra) if k in MODELS.runtime}
    node.update(extra)
    return MODELS.build(MODELS.parse(node), in_shape=in_shape, num_outputs=4, **runtime)


def test_every_registered_model_has_a_case() -> None:
    assert sorted(CASES) == MODELS.names()


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward_and_a_short_run_lowers_the_loss(name: str) -> None:
    torch.manual_seed(0)
    _, shape, task_name = CASES[name]
    model = build(name, shape)
    task = build_task(task_name)
    x = torch.randn(32, *shape)
    y = torch.arange(32) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        loss, sums = task.step(model, x, y)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        optimizer.step()
        losses.append(loss.item() / 32)
    if name == "gan":  # adversarial losses need not fall; both networks must have moved and stay finite
        assert all(torch.isfinite(torch.tensor(losses)))
        assert model.sample(5).shape == (5, *shape)
        return
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent_nets_take_tokens_and_give_per_step_logits(cell: str) -> None:
    model = build(cell, (10,), vocab_size=7, per_step=True, bidirectional=False)
    tokens = torch.randint(0, 7, (3, 10))
    assert model(tokens).shape == (3, 10, 4)
    real = build(cell, (10,))
    assert real(torch.randn(3, 10)).shape == (3, 4)  # (N, T) real values read as one feature
    with pytest.raises(ConfigError, match="see the next token"):
        build(cell, (10,), vocab_size=7, per_step=True, bidirectional=True)


def test_resnet_projection_shortcuts_and_bottleneck() -> None:
    from dltrain.models.resnet import Block

    model = build("resnet", (3, 16, 16), block="bottleneck")
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert not isinstance(blocks[0].shortcut, torch.nn.Identity)  # 8 -> 32 channels (bottleneck x4)
    assert blocks[1].shortcut[0].stride == (2, 2)  # stage 2 halves the resolution
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    with pytest.raises(ConfigError, match="needs image inputs"):
        build("resnet", (64,))


def test_conv_autoencoder_rebuilds_odd_image_sizes() -> None:
    model = build("autoencoder", (1, 28, 28), variant="conv")
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 1, 28, 28)
    assert model.encode(torch.randn(2, 1, 28, 28)).shape == (2, 8)


def test_gan_gives_each_network_only_its_own_gradient() -> None:
    torch.manual_seed(0)
    model = build("gan", (1, 8, 8))
    real, fake_d, fake_g = model(torch.randn(4, 1, 8, 8))
    fake_d.sum().backward(retain_graph=True)
    assert all(p.grad is None for p in model.generator.parameters())  # D's loss on detached fakes
    model.zero_grad()
    fake_g.sum().backward()
    assert all(p.grad is None for p in model.discriminator.parameters())  # G's loss through frozen D
    assert any(p.grad is not None for p in model.generator.parameters())


@pytest.mark.parametrize("init, check", [
    ("zeros", lambda w: torch.all(w == 0)),
    ("ones", lambda w: torch.all(w == 1)),
    ("constant", lambda w: torch.all(w == 0.5)),
])
def test_inits_set_weights_and_zero_biases(init: str, check) -> None:
    args = {"val": 0.5} if init == "constant" else {}
    model = build("mlp", (4,), init=init, init_args=args)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(check(m.weight) and torch.all(m.bias == 0) for m in linears)


def test_unknown_init_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="init_args.sd is not an argument of init=normal; valid: mean, std"):
        build("mlp", (4,), init="normal", init_args={"sd": 1.0})


def test_bidirectional_classifier_reads_every_step_in_both_directions() -> None:
    model = build("gru", (10, 3), bidirectional=True, num_layers=1)
    x = torch.randn(2, 10, 3, requires_grad=True)
    model(x).sum().backward()
    assert torch.all(x.grad.abs().sum(dim=(0, 2)) > 0)  # the first step reaches the output too
    _, h_n = model.rnn(x)
    torch.testing.assert_close(model(x), model.head(torch.cat([h_n[-2], h_n[-1]], dim=-1)))


def test_the_cnn_yaml_expresses_pytorchs_mnist_example_net() -> None:
    """experiments/mnist_pytorch_example.yaml builds pytorch/examples' mnist Net layer for layer: two convs, one
    pool, dropout, then the head (1,199,882 parameters)."""
    from dltrain.run.assemble import build as build_run
    from tests.conftest import parse

    model = build_run(parse(["experiment=mnist_pytorch_example"])).model
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Dropout", "Flatten", "Linear", "ReLU",
                     "Dropout", "Linear"]
    assert (model[5].p, model[9].p, model[7].in_features) == (0.25, 0.5, 9216)
    assert sum(p.numel() for p in model.parameters()) == 1_199_882
