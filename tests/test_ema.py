"""trainer.ema: the average follows its formula (against a hand-written EMA and a closed form) with one fused op per
optimizer step and no host sync; validation, the best epoch, the test and eval/predict use the averaged weights;
checkpoints keep them and a resume continues exactly; bad values are one line."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dltrain.core import checkpoint
from dltrain.core.ema import Ema, decay_at
from dltrain.core.engine import evaluate
from dltrain.core.registry import ConfigError
from tests.conftest import cli, parse, run

QUICK = ["model.hidden=[32]", "trainer.log_every_n_steps=0", "early_stopping.patience=100"]


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_the_warm_up_follows_its_formula() -> None:
    assert decay_at(1, 0.999, True) == 2 / 11 and decay_at(80, 0.999, True) == pytest.approx(0.9)
    assert decay_at(10**6, 0.999, True) == 0.999 and decay_at(1, 0.9, False) == 0.9


@pytest.mark.parametrize("warmup", [True, False])
def test_the_average_matches_a_hand_written_ema_while_training(warmup) -> None:
    model, decay = tiny(), 0.8
    ema = Ema(model, decay, warmup)
    hand = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for k in range(1, 21):
        x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        ema.update()
        d = min(decay, (1 + k) / (10 + k)) if warmup else decay
        for name, value in model.state_dict().items():  # batch norm's running stats averaged, its counter copied
            hand[name] = d * hand[name] + (1 - d) * value if value.is_floating_point() else value.clone()
    assert ema.updates == 20
    for name, value in ema.module.state_dict().items():
        torch.testing.assert_close(value, hand[name], rtol=1e-5, atol=1e-6)
    assert ema.module.state_dict()["1.num_batches_tracked"] == 20


def test_constant_weights_close_in_as_the_closed_form_says() -> None:
    model = tiny()
    ema = Ema(model, 0.9, warmup=True)
    start = {k: v.clone() for k, v in ema.module.state_dict().items() if v.is_floating_point()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the trained weights jump once, then stay: ema_n - w = (ema_0 - w) * prod(d_k)
    for _ in range(30):
        ema.update()
    kept = math.prod(min(0.9, (1 + k) / (10 + k)) for k in range(1, 31))
    for name, value in model.state_dict().items():
        if name in start:
            torch.testing.assert_close(ema.module.state_dict()[name], value + (start[name] - value) * kept)


class Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_an_update_is_one_fused_average_and_one_copy_without_a_host_sync() -> None:
    ema = Ema(tiny(), 0.999)
    with Ops() as ops:
        ema.update()
    assert ops.names == ["_foreach_lerp_.Scalar", "_foreach_copy_.default"], ops.names  # no item/_local_scalar_dense


def step_ops(tmp_path, extra: list[str]) -> tuple[list[str], int]:
    """The aten ops of one training epoch of the engine (assembled as a run is), and its optimizer steps."""
    from dltrain.core.engine import train_epoch
    from dltrain.run.assemble import assemble

    threads = torch.get_num_threads()
    config = parse(["data=synthetic", "data.train_size=256", "data.batch_size=32", "trainer.device=cpu",
                    "trainer.threads=1", *extra])
    try:
        built = assemble(config, tmp_path, torch.device("cpu"))
        with Ops() as ops:
            train_epoch(built.state, built.parts.task, built.splits[0], built.settings, [])
    finally:
        torch.set_num_threads(threads)
    return ops.names, built.state.step


def test_the_engine_step_gains_exactly_the_fused_average_and_nothing_when_off(tmp_path) -> None:
    off, steps = step_ops(tmp_path, [])
    on, same = step_ops(tmp_path, ["trainer.ema.decay=0.99"])
    assert steps == same == 8 and on.count("_foreach_lerp_.Scalar") == steps
    assert [name for name in on if name != "_foreach_lerp_.Scalar"] == off  # the step is otherwise the same
    assert not [name for name in on if name.startswith(("_local_scalar_dense", "item"))]  # no host sync


def test_validation_the_best_epoch_the_test_and_eval_predict_use_the_ema_weights(tmp_path) -> None:
    from dltrain.tools.evaluation import evaluate_run, load_run
    from dltrain.tools.predict import load_predictor

    report = run([*QUICK, "trainer.max_epochs=3", "trainer.ema.decay=0.95"], tmp_path)
    last = checkpoint.load(tmp_path / "last.pt")
    assert last["ema"]["updates"] == last["step"] > 0  # one update per optimizer step
    loaded = load_run(tmp_path / "last.pt")  # served: the EMA's weights
    parts = loaded.parts
    val = evaluate(parts.model, parts.task, parts.data.val, parts.config.data.batch_size, "val")
    assert val["val/loss"] == pytest.approx(report["final"]["val/loss"], rel=1e-6)
    parts.model.load_state_dict(last["model"])  # the trained weights judge differently: the check above means it
    trained = evaluate(parts.model, parts.task, parts.data.val, parts.config.data.batch_size, "val")
    assert abs(trained["val/loss"] - val["val/loss"]) > 1e-3
    best = checkpoint.load(tmp_path / "best.pt")
    assert best["epoch"] == report["best_epoch"]
    tested = evaluate_run(load_run(tmp_path))  # `dltrain eval RUN`: best.pt, its EMA weights
    assert tested["test/loss"] == pytest.approx(report["test"]["test/loss"], rel=1e-6)
    served = load_predictor(tmp_path).model.model.state_dict()  # `dltrain predict` / export: the same weights
    for name, value in best["ema"]["weights"].items():
        assert torch.equal(served[name], value), name


# dropout makes the global RNG state matter; a step schedule the epoch counter; a patience the best epoch's weights
RESUMED = [*QUICK, "model.dropout=0.2", "optim=adam", "sched=step", "sched.boundaries=[2]", "trainer.ema.decay=0.9"]


def test_a_resumed_run_with_ema_ends_bit_identical_to_an_uninterrupted_one(tmp_path) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    a = run([*RESUMED, "trainer.max_epochs=4"], straight)
    run([*RESUMED, "trainer.max_epochs=2"], interrupted)  # "interrupted" after epoch 2
    b = run([*RESUMED, "trainer.max_epochs=4", f"trainer.resume={interrupted}"], interrupted)
    for name in ("last.pt", "best.pt"):
        one, two = checkpoint.load(straight / name), checkpoint.load(interrupted / name)
        assert one["ema"]["updates"] == two["ema"]["updates"] and one["epoch"] == two["epoch"]
        for x, y in ((one["model"], two["model"]), (one["ema"]["weights"], two["ema"]["weights"])):
            for key in x:
                assert torch.equal(x[key], y[key]), (name, key)
    drop = ("throughput/samples_per_sec", "time/epoch_sec")
    kept = [{k: v for k, v in report["final"].items() if k not in drop} for report in (a, b)]
    assert kept[0] == kept[1]
    assert (a["test"], a["best"], a["best_epoch"]) == (b["test"], b["best"], b["best_epoch"])


def test_a_resume_cannot_switch_ema_on_or_off(tmp_path) -> None:
    run([*QUICK, "trainer.max_epochs=1"], tmp_path / "plain")
    run([*QUICK, "trainer.max_epochs=1", "trainer.ema.decay=0.9"], tmp_path / "averaged")
    with pytest.raises(ConfigError, match=r"has no EMA weights .* resume with trainer.ema.decay=null"):
        run([*QUICK, "trainer.max_epochs=2", "trainer.ema.decay=0.9", f"trainer.resume={tmp_path / 'plain'}"],
            tmp_path / "plain")
    with pytest.raises(ConfigError, match=r"keeps EMA weights .* resume with trainer.ema.decay=0.9"):
        run([*QUICK, "trainer.max_epochs=2", f"trainer.resume={tmp_path / 'averaged'}"], tmp_path / "averaged")
    assert checkpoint.load(tmp_path / "averaged" / "last.pt")["epoch"] == 1  # refused: the run is as it was


@pytest.mark.parametrize("overrides, message", [
    (["trainer.ema.decay=1.0"], "trainer.ema.decay=1.0 must be in [0, 1)"),
    (["trainer.ema.decay=-0.5"], "trainer.ema.decay=-0.5 must be in [0, 1)"),
    (["trainer.ema.warmup=yes"], "trainer.ema.warmup='yes' is not a boolean: write true or false"),
    (["experiment=gan_digits", "trainer.ema.decay=0.99"], "trainer.ema.decay=0.99 is not supported with model=gan"),
])
def test_bad_ema_settings_are_one_line_at_the_door(overrides, message) -> None:
    with pytest.raises(ConfigError) as err:
        parse(overrides)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(message), err.value.problems


def test_damaged_ema_weights_are_one_line(tmp_path) -> None:
    run([*QUICK, "trainer.max_epochs=1", "trainer.ema.decay=0.9"], tmp_path)
    saved = checkpoint.load(tmp_path / "last.pt")
    next(iter(saved["ema"]["weights"].values())).fill_(math.nan)
    checkpoint.save_atomic(saved, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match="holds non-finite EMA weights"):
        checkpoint.validate(checkpoint.load(tmp_path / "last.pt"), tmp_path / "last.pt")


def test_the_command_line_refuses_a_decay_of_one_in_one_line(tmp_path) -> None:
    done = cli(["trainer.ema.decay=1"], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "dltrain: error: trainer.ema.decay=1 must be in [0, 1)\n", done.stderr
