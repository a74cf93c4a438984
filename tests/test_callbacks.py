"""Early stopping on scripted metric sequences: the exact stopping epoch, Keras semantics, best weights.
The engine judges each epoch (`Best.update`) before the callbacks run; `drive` does the same."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dltrain.core.callbacks import EarlyStopping
from dltrain.core.engine import Best, State, restore_best_weights
from dltrain.run.config import parse_early_stopping

BEST_KEYS = ("monitor", "mode", "min_delta", "start_from_epoch", "restore_best")


def make_state(best: Best | None = None) -> State:
    model = nn.Linear(2, 1)
    return State(model=model, raw_model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                 scaler=torch.amp.GradScaler("cpu", enabled=False), best=best or Best())


def stopping(**options) -> tuple[EarlyStopping, Best]:
    """The early_stopping group's options, split between the stopper and the engine's Best as a run does."""
    best = Best(**{k: v for k, v in options.items() if k in BEST_KEYS})
    return EarlyStopping(**{k: v for k, v in options.items() if k not in BEST_KEYS}), best


def drive(pair: tuple[EarlyStopping, Best], values: list[float], key: str = "val/loss") -> tuple[State, int]:
    """Feed one value per epoch; returns the state and the epoch at which the run stopped."""
    stopper, best = pair
    state = make_state(best)
    for value in values:
        state.epoch += 1
        with torch.no_grad():
            state.raw_model.weight.fill_(value)  # weights remember which epoch they come from
        state.metrics = {key: value, "train/loss": 1.0}
        state.best.update(state.metrics, state.epoch, state.raw_model)  # as the engine does, before callbacks
        stopper.on_epoch_end(state)
        if state.should_stop:
            break
    return state, state.epoch


def test_stops_after_patience_epochs_without_improvement() -> None:
    values = [1.0, 0.8, 0.7, 0.71, 0.72, 0.69, 0.75, 0.76, 0.77, 0.5]
    state, stopped = drive(stopping(patience=3), values)
    assert stopped == 9  # best 0.69 at epoch 6, then 3 epochs without improvement
    assert "did not improve" in state.stop_reason and "epoch 6" in state.stop_reason


def test_min_delta_counts_small_gains_as_no_improvement() -> None:
    values = [1.0, 0.95, 0.949, 0.948, 0.947]
    _, stopped = drive(stopping(patience=2, min_delta=0.01), values)
    assert stopped == 4  # 0.949 and 0.948 beat 0.95 by less than 0.01


def test_mode_max_and_patience_zero() -> None:
    _, stopped = drive(stopping(monitor="val/acc", mode="max", patience=0), [0.5, 0.6, 0.6, 0.9],
                       key="val/acc")
    assert stopped == 3


def test_disabled_never_stops_but_tracks_best() -> None:
    state, stopped = drive(stopping(patience=1, enabled=False), [1.0, 0.5, 0.9, 0.9, 0.9, 0.9])
    assert stopped == 6 and state.best.value == 0.5 and state.best.epoch == 2


def test_baseline_must_be_beaten_to_reset_the_counter() -> None:
    values = [0.9, 0.8, 0.85, 0.9, 0.95]
    assert drive(stopping(patience=2), values)[1] == 4
    # improvements that do not beat the baseline still count towards patience (Keras)
    assert drive(stopping(patience=2, baseline=0.5), values)[1] == 3


def test_start_from_epoch_ignores_warmup_epochs() -> None:
    state, stopped = drive(stopping(patience=1, start_from_epoch=3), [0.1, 0.2, 0.3, 1.0, 1.1])
    assert stopped == 5 and state.best.epoch == 4


def test_nonfinite_value_stops_at_once() -> None:
    state, stopped = drive(stopping(patience=10), [1.0, math.nan, 0.5])
    assert stopped == 2 and "non-finite" in state.stop_reason


def test_restore_best_loads_the_best_epochs_weights() -> None:
    state, _ = drive(stopping(patience=2, restore_best=True), [0.9, 0.3, 0.4, 0.5])
    assert state.raw_model.weight.flatten()[0].item() == pytest.approx(0.5)  # last epoch's weights
    restore_best_weights(state)  # what fit() does before on_train_end and the test split
    assert state.raw_model.weight.flatten()[0].item() == pytest.approx(0.3)  # epoch 2's weights


def test_state_round_trips() -> None:
    pair = stopping(patience=3)
    state, _ = drive(pair, [0.9, 0.3, 0.4])
    fresh_stopper, fresh_best = stopping(patience=3)
    fresh_stopper.load_state_dict(pair[0].state_dict())
    fresh_best.load_state_dict(state.best.state_dict(), None)
    assert (fresh_best.value, fresh_best.epoch, fresh_stopper.wait) == (0.3, 2, 1)


def test_a_resumed_run_that_already_met_its_rule_stays_stopped() -> None:
    pair = stopping(patience=2)
    state, _ = drive(pair, [0.5, 0.6, 0.7])  # stopped at epoch 3
    saved_stopper, saved_best = pair[0].state_dict(), state.best.state_dict()
    same, patient, other = stopping(patience=2), stopping(patience=5), stopping(monitor="val/acc", mode="max")
    states = []
    for fresh_stopper, fresh_best in (same, patient, other):
        fresh_stopper.load_state_dict(saved_stopper)
        fresh_best.load_state_dict(saved_best, None)
        states.append(make_state(fresh_best))
        fresh_stopper.on_fit_start(states[-1])
    assert states[0].should_stop and states[0].stop_reason == state.stop_reason  # as when it stopped: finished alike
    assert not states[1].should_stop  # a larger patience lets the run go on
    assert not states[2].should_stop and other[1].value is None  # another monitor starts afresh
    older, older_best = stopping(patience=2)  # a checkpoint of an older dltrain holds no reason
    older.load_state_dict({"wait": saved_stopper["wait"]})
    older_best.load_state_dict(saved_best, None)
    older.on_fit_start(states[0])
    assert states[0].stop_reason.startswith("early stopping (already met before resuming)")


def test_options_are_split_by_the_class_that_uses_them() -> None:
    """One definition per option: Best's and EarlyStopping's own signatures, checked at the door."""
    from dltrain.core.registry import ConfigError

    parsed = parse_early_stopping({"early_stopping": {"monitor": "val/acc", "mode": "max", "patience": 3}})
    assert parsed.best == {"monitor": "val/acc", "mode": "max"} and parsed.stopping == {"patience": 3}
    with pytest.raises(ConfigError) as err:
        parse_early_stopping({"early_stopping": {"patience": -1, "min_delta": -0.5}})
    assert len(err.value.problems) == 2  # every problem, one line each
    with pytest.raises(ConfigError, match="early_stopping.patiense is not an option of early_stopping; valid: "
                                          "monitor, mode, min_delta, start_from_epoch, restore_best, enabled"):
        parse_early_stopping({"early_stopping": {"patiense": 3}})


@pytest.mark.parametrize("values, stopped, reason", [
    ([1.0, math.nan, math.nan, 0.5], 3, "for 2 epochs (best 1 at epoch 1)"),  # two NaN epochs: 2 without improvement
    ([1.0, math.nan, 0.5, math.nan, math.inf, 0.1], 5, "for 2 epochs (best 0.5 at epoch 3)"),  # an improvement resets
    ([math.nan, math.nan, math.nan], 2, "for 2 epochs (no finite val/loss yet)"),
])
def test_a_nonfinite_epoch_that_goes_on_counts_as_one_without_improvement(values, stopped, reason) -> None:
    """conf/early_stopping/default.yaml: an epoch that does not improve increments the counter; the run stops
    when it reaches patience. With stop_on_nonfinite=false a NaN/inf epoch is such an epoch (as in Keras)."""
    state, at = drive(stopping(patience=2, stop_on_nonfinite=False), values)
    assert at == stopped and state.stop_reason.startswith("early stopping") and state.stop_reason.endswith(reason)


def test_a_resumed_run_whose_every_epoch_was_nonfinite_stays_stopped() -> None:
    pair = stopping(patience=2, stop_on_nonfinite=False)
    drive(pair, [math.nan, math.nan])
    fresh_stopper, fresh_best = stopping(patience=2, stop_on_nonfinite=False)
    fresh_stopper.load_state_dict(pair[0].state_dict())
    state = make_state(fresh_best)
    fresh_stopper.on_fit_start(state)
    assert state.should_stop and state.stop_reason.endswith("(no finite val/loss yet)")


def test_a_diverged_run_told_to_go_on_stops_after_patience_epochs(tmp_path) -> None:
    """Through the CLI: lr=1e12 gives NaN from epoch 1; with stop_on_nonfinite=false and patience 2 the run ends
    at epoch 2 (it used to skip NaN epochs and train all 8)."""
    import json

    from tests.conftest import cli

    result = cli(["optim.lr=1e12", "early_stopping.stop_on_nonfinite=false", "early_stopping.patience=2",
                  "trainer.max_epochs=8", "model.hidden=[16]", "trainer.log_every_n_steps=0", "hydra.run.dir=run"],
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["epochs"] == 2 and report["stop_reason"].startswith("early stopping"), report["stop_reason"]


def test_the_built_ins_are_registered_and_built_like_a_users_callback(tmp_path) -> None:
    """Each built-in is a CALLBACKS name built from its own config keys as keyword arguments, the run's folder and
    epochs given at run time; the order of today (the checkpointer last, holding the state of the others)."""
    from dltrain.core.callbacks import CALLBACKS, RUNTIME, Checkpointer, Progress, TensorBoard
    from dltrain.run.assemble import build, make_callbacks
    from tests.conftest import parse

    assert {"early_stopping", "checkpoints", "tensorboard", "progress"} <= set(CALLBACKS.names())
    assert all(key not in CALLBACKS.config_keys("checkpoints") for key in RUNTIME)  # never from YAML
    parts = build(parse(["model.hidden=[4]", "early_stopping.patience=7", "early_stopping.enabled=false",
                         "trainer.ckpt.save_last=false", "trainer.max_epochs=9"]))
    stopper, board, progress, saver = make_callbacks(parts, tmp_path, {})
    assert (type(stopper), type(board), type(progress), type(saver)) == (EarlyStopping, TensorBoard, Progress,
                                                                         Checkpointer)
    assert (stopper.patience, stopper.enabled, progress.max_epochs) == (7, False, 9)
    assert (saver.save_last, saver.save_best, saver.run_dir, board.run_dir) == (False, True, tmp_path, tmp_path)
    assert saver.callbacks == [stopper, board, progress] and board.hparams["early_stopping.patience"] == 7
    assert not list(tmp_path.iterdir())  # nothing written before fitting starts


@pytest.mark.parametrize("name, message", [
    ("early_stopping", "callbacks.early_stopping is dltrain's own callback, always on (its options are the "
                       "early_stopping keys)"),
    ("checkpoints", "callbacks.checkpoints is dltrain's own callback, always on (its options are the trainer.ckpt"),
    ("progress", "callbacks.progress is dltrain's own callback, always on (it has no options)"),
])
def test_the_callbacks_mapping_adds_the_users_callbacks_only(name, message) -> None:
    from dltrain.core.registry import ConfigError
    from tests.conftest import parse

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse([f"+callbacks.{name}={{}}"])
    with pytest.raises(ConfigError, match="unknown callback 'nope'; valid: ") as err:
        parse(["+callbacks.nope={}"])
    assert "progress" not in str(err.value) and "tensorboard" not in str(err.value)  # as before: users' names only


def test_a_users_callback_gets_its_options_and_the_run_time_arguments_it_asks_for(tmp_path) -> None:
    """A user's callback is built as the built-ins are: YAML options as keyword arguments, and of the run-time
    arguments (callbacks.RUNTIME) those its __init__ names; those cannot be set in YAML."""
    from dltrain import Callback, register_callback
    from dltrain.core.callbacks import CALLBACKS
    from dltrain.core.registry import ConfigError
    from dltrain.run.assemble import build, make_callbacks
    from tests.conftest import parse

    if "every_nth_epoch" not in CALLBACKS.names():  # registered once per test process
        @register_callback("every_nth_epoch")
        class EveryNthEpoch(Callback):
            def __init__(self, max_epochs: int, run_dir, every: int = 1) -> None:
                self.max_epochs, self.run_dir, self.every = max_epochs, run_dir, every

    parts = build(parse(["model.hidden=[4]", "trainer.max_epochs=4", "+callbacks.every_nth_epoch={every:2}"]))
    users = [cb for cb in make_callbacks(parts, tmp_path, {}) if type(cb).__name__ == "EveryNthEpoch"]
    assert [(cb.max_epochs, cb.run_dir, cb.every) for cb in users] == [(4, tmp_path, 2)]
    with pytest.raises(ConfigError, match="callback.run_dir is not an option of callback=every_nth_epoch; valid: every"):
        parse(["+callbacks.every_nth_epoch={run_dir:elsewhere}"])
