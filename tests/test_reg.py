"""Regularizers change the loss by exactly their formula; dropout scales survivors by 1/(1-p)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dltrain.core.reg import penalized_weights, penalty
from dltrain.models import MODELS


def test_l1_l2_penalties_are_exact_and_skip_biases_and_norms() -> None:
    torch.manual_seed(0)
    model = MODELS.build(MODELS.parse({"name": "mlp", "hidden": [5], "batch_norm": True}), in_shape=(3,), num_outputs=2)
    weights = [w.detach() for w in penalized_weights(model)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [w.shape for w in weights] == [m.weight.shape for m in linears]  # no bias, no BatchNorm weight
    l1 = sum(m.weight.abs().sum() for m in linears).item()
    l2 = sum((m.weight ** 2).sum() for m in linears).item()
    assert float(penalty(weights, 0.01, 0.0)) == pytest.approx(0.01 * l1)
    assert float(penalty(weights, 0.0, 0.1)) == pytest.approx(0.5 * 0.1 * l2)
    assert float(penalty(weights, 0.01, 0.1)) == pytest.approx(0.01 * l1 + 0.05 * l2)
    assert penalty(weights, 0.0, 0.0) == 0.0


def one_sgd_step(**settings) -> nn.Module:
    """One engine step (SGD, lr 0.5, one batch of 8) of a Linear(4, 3) from a fixed start."""
    from dltrain.core.engine import LoopSettings, State, train_epoch
    from dltrain.core.tasks import Classification
    from dltrain.data import Split

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    state = State(model=model, raw_model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                  scaler=torch.amp.GradScaler("cpu", enabled=False))
    data = Split(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3)
    train_epoch(state, Classification(), data, LoopSettings(max_epochs=1, batch_size=8, lr_at=lambda t: 0.5,
                                                            lr_per_step=False, **settings), [])
    return model


def start_weights() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 3)


def test_l2_penalty_enters_the_gradient_step() -> None:
    """One SGD step of a run with reg.l2 equals the plain step minus lr * l2 * w (weights only)."""
    plain, decayed = one_sgd_step(), one_sgd_step(l2=0.2)
    assert torch.allclose(decayed.weight, plain.weight - 0.5 * 0.2 * start_weights().weight, atol=1e-6)
    assert torch.allclose(decayed.bias, plain.bias)  # biases are not penalized


def test_l1_penalty_enters_the_gradient_step() -> None:
    """d(l1 * sum|w|)/dw = l1 * sign(w): the step moves each weight by lr * l1 towards zero, biases untouched."""
    plain, shrunk = one_sgd_step(), one_sgd_step(l1=0.01)
    assert torch.allclose(shrunk.weight, plain.weight - 0.5 * 0.01 * start_weights().weight.sign(), atol=1e-6)
    assert torch.allclose(shrunk.bias, plain.bias)


def test_grad_clip_limits_the_global_gradient_norm() -> None:
    """With clip c below the gradient's norm, the step is lr * c * g / |g| (torch's clip_grad_norm_)."""
    plain, clipped = one_sgd_step(), one_sgd_step(grad_clip=0.01)
    start = start_weights()
    grads = [(start.weight - plain.weight) / 0.5, (start.bias - plain.bias) / 0.5]  # the plain step's gradient
    norm = torch.cat([g.flatten() for g in grads]).norm()
    assert norm > 0.01  # so the clip is active
    assert torch.allclose(clipped.weight, start.weight - 0.5 * grads[0] * 0.01 / norm, atol=1e-6)
    assert torch.allclose(clipped.bias, start.bias - 0.5 * grads[1] * 0.01 / norm, atol=1e-6)
    unclipped = one_sgd_step(grad_clip=1e6)  # a clip above the norm changes nothing
    assert torch.allclose(unclipped.weight, plain.weight, atol=1e-7)


def test_dropout_scales_survivors_in_training_and_is_identity_in_eval() -> None:
    model = MODELS.build(MODELS.parse({"name": "mlp", "hidden": [2000], "dropout": 0.25, "activation": "identity"}),
                         in_shape=(1,), num_outputs=1)
    dropout = next(m for m in model.modules() if isinstance(m, nn.Dropout))
    x = torch.ones(1, 2000)
    dropout.train()
    out = dropout(x)
    survivors = out[out != 0]
    assert torch.allclose(survivors, torch.full_like(survivors, 1 / 0.75))
    assert 0.65 < survivors.numel() / 2000 < 0.85
    dropout.eval()
    assert torch.equal(dropout(x), x)
