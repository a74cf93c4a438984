"""Early stopping on scripted metric sequences: the exact stopping epoch, Keras semantics, best weights."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dltrain.callbacks import EarlyStopping
from dltrain.engine import State


def make_state() -> State:
    model = nn.Linear(2, 1)
    return State(model=model, raw_model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                 scaler=torch.amp.GradScaler("cpu", enabled=False))


def drive(stopper: EarlyStopping, values: list[float], key: str = "val/loss") -> tuple[State, int]:
    """Feed one value per epoch; returns the state and the epoch at which the run stopped."""
    state = make_state()
    for value in values:
        state.epoch += 1
        with torch.no_grad():
            state.raw_model.weight.fill_(value)  # weights remember which epoch they come from
        state.metrics = {key: value, "train/loss": 1.0}
        stopper.on_epoch_end(state)
        if state.should_stop:
            break
    return state, state.epoch


def test_stops_after_patience_epochs_without_improvement() -> None:
    values = [1.0, 0.8, 0.7, 0.71, 0.72, 0.69, 0.75, 0.76, 0.77, 0.5]
    state, stopped = drive(EarlyStopping(patience=3), values)
    assert stopped == 9  # best 0.69 at epoch 6, then 3 epochs without improvement
    assert "did not improve" in state.stop_reason and "epoch 6" in state.stop_reason


def test_min_delta_counts_small_gains_as_no_improvement() -> None:
    values = [1.0, 0.95, 0.949, 0.948, 0.947]
    _, stopped = drive(EarlyStopping(patience=2, min_delta=0.01), values)
    assert stopped == 4  # 0.949 and 0.948 beat 0.95 by less than 0.01


def test_mode_max_and_patience_zero() -> None:
    _, stopped = drive(EarlyStopping(monitor="val/acc", mode="max", patience=0), [0.5, 0.6, 0.6, 0.9],
                       key="val/acc")
    assert stopped == 3


def test_disabled_never_stops_but_tracks_best() -> None:
    stopper = EarlyStopping(patience=1, enabled=False)
    _, stopped = drive(stopper, [1.0, 0.5, 0.9, 0.9, 0.9, 0.9])
    assert stopped == 6 and stopper.best == 0.5 and stopper.best_epoch == 2


def test_baseline_must_be_beaten_to_reset_the_counter() -> None:
    values = [0.9, 0.8, 0.85, 0.9, 0.95]
    assert drive(EarlyStopping(patience=2), values)[1] == 4
    # improvements that do not beat the baseline still count towards patience (Keras)
    assert drive(EarlyStopping(patience=2, baseline=0.5), values)[1] == 3


def test_start_from_epoch_ignores_warmup_epochs() -> None:
    stopper = EarlyStopping(patience=1, start_from_epoch=3)
    _, stopped = drive(stopper, [0.1, 0.2, 0.3, 1.0, 1.1])
    assert stopped == 5 and stopper.best_epoch == 4


def test_nonfinite_value_stops_at_once() -> None:
    state, stopped = drive(EarlyStopping(patience=10), [1.0, math.nan, 0.5])
    assert stopped == 2 and "non-finite" in state.stop_reason


def test_restore_best_loads_the_best_epochs_weights() -> None:
    stopper = EarlyStopping(patience=2, restore_best=True)
    state, _ = drive(stopper, [0.9, 0.3, 0.4, 0.5])
    assert state.raw_model.weight.flatten()[0].item() == pytest.approx(0.5)  # last epoch's weights
    stopper.on_train_end(state)
    assert state.raw_model.weight.flatten()[0].item() == pytest.approx(0.3)  # epoch 2's weights


def test_state_round_trips() -> None:
    stopper = EarlyStopping(patience=3)
    drive(stopper, [0.9, 0.3, 0.4])
    fresh = EarlyStopping(patience=3)
    fresh.load_state_dict(stopper.state_dict(), None)
    assert (fresh.best, fresh.best_epoch, fresh.wait) == (0.3, 2, 1)


def test_a_resumed_run_that_already_met_its_rule_stays_stopped() -> None:
    stopper = EarlyStopping(patience=2)
    drive(stopper, [0.5, 0.6, 0.7])  # stopped at epoch 3
    saved = stopper.state_dict()
    same, patient, other = EarlyStopping(patience=2), EarlyStopping(patience=5), EarlyStopping(monitor="val/acc",
                                                                                                mode="max")
    for fresh in (same, patient, other):
        fresh.load_state_dict(saved, None)
    states = [make_state() for _ in range(3)]
    for fresh, state in zip((same, patient, other), states):
        fresh.on_fit_start(state)
    assert states[0].should_stop and "already met" in states[0].stop_reason
    assert not states[1].should_stop  # a larger patience lets the run go on
    assert not states[2].should_stop and other.best is None  # another monitor starts afresh
