"""The engine's optimizer step is exactly a hand-written step on the batch-mean loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dltrain.core.engine import LoopSettings, State, train_epoch
from dltrain.core.tasks import Classification
from dltrain.data import Split

DATA = Split(torch.randn(10, 4, generator=torch.Generator().manual_seed(1)), torch.arange(10) % 3)


def engine_epoch(batch_size: int, scaled: bool) -> tuple[nn.Module, dict[str, float]]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    state = State(model=model, raw_model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                  scaler=torch.amp.GradScaler("cpu", enabled=scaled))
    metrics = train_epoch(state, Classification(), DATA, LoopSettings(max_epochs=1, batch_size=batch_size,
                                                                     lr_at=lambda t: 0.5, lr_per_step=False), [])
    return model, metrics


def hand_epoch(batch_size: int) -> tuple[nn.Module, float, float]:
    """The same batches in the same order (the engine's permutation for epoch 0, seed 0)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    perm = torch.randperm(len(DATA), generator=torch.Generator().manual_seed(0))
    loss_sum, correct = 0.0, 0
    for start in range(0, len(DATA), batch_size):
        idx = perm[start:start + batch_size]
        logits = model(DATA.x[idx])
        loss = F.cross_entropy(logits, DATA.y[idx])
        correct += int((logits.argmax(1) == DATA.y[idx]).sum())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(idx)
    return model, loss_sum / len(DATA), correct / len(DATA)


@pytest.mark.parametrize("scaled", [False, True], ids=["fp32", "grad_scaler"])
@pytest.mark.parametrize("batch_size", [5, 4], ids=["even", "ragged_last_batch"])
def test_engine_step_is_a_step_on_the_mean_loss(batch_size: int, scaled: bool) -> None:
    """Also with the GradScaler on (fp16's): its loss scale is applied and removed again, exactly."""
    engine_model, metrics = engine_epoch(batch_size, scaled)
    hand_model, mean_loss, accuracy = hand_epoch(batch_size)
    assert torch.allclose(engine_model.weight, hand_model.weight, atol=1e-6)
    assert torch.allclose(engine_model.bias, hand_model.bias, atol=1e-6)
    assert metrics["train/loss"] == pytest.approx(mean_loss, rel=1e-5)
    assert metrics["train/acc"] == pytest.approx(accuracy)


def test_split_is_the_engines_type_under_every_public_name() -> None:
    """The engine owns Split (core imports nothing from dltrain.data); the data package and the facade re-export it."""
    import dltrain
    import dltrain.core.engine
    import dltrain.data

    assert dltrain.Split is dltrain.data.Split is dltrain.core.engine.Split is Split
