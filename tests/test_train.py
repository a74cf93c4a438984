"""End-to-end runs of the engine on real data (scikit-learn digits): what a run writes and logs."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from dltrain import checkpoint
from dltrain.build import build, make_optimizer
from tests.conftest import load_scalars, parse, run


def test_default_run_learns_and_reports(tmp_path, fast) -> None:
    report = run(fast, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["status"] == "completed" and saved["epochs"] == 3 and saved["world_size"] == 1
    assert saved["stop_reason"] == "max_epochs reached"
    assert saved["test"]["test/acc"] > 0.7  # 3 epochs of SGD on digits; chance is 0.1
    assert saved["final"]["val/loss"] < 1.5 < 2.3  # started near ln(10) = 2.30
    for key in ("best", "best_epoch", "train_seconds", "samples_per_sec", "monitor", "git_commit"):
        assert key in saved
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["model"]["hidden"] == [32]


def test_tensorboard_scalars_have_the_fixed_tags(tmp_path, fast) -> None:
    run(fast, tmp_path)
    scalars = load_scalars(tmp_path)
    for tag in ("train/loss", "val/loss", "val/acc", "lr", "test/loss", "test/acc", "throughput/samples_per_sec"):
        assert tag in scalars, tag
    assert [step for step, _ in scalars["val/loss"]] == [1, 2, 3]
    losses = [v for _, v in scalars["train/loss"]]
    assert losses[-1] < losses[0]


def test_checkpoints_hold_everything_to_resume(tmp_path, fast) -> None:
    run(fast, tmp_path)
    saved = checkpoint.load(tmp_path / "last.pt")
    assert saved["epoch"] == 3 and saved["step"] == 3 * 17  # 1078 train samples at batch 64
    assert {"model", "optimizer", "scaler", "best", "callbacks", "rng", "config", "git_commit"} <= set(saved)
    assert saved["callbacks"]["EarlyStopping"] == {"wait": 0} and saved["best"]["epoch"] == 3
    assert yaml.safe_load(saved["config"])["trainer"]["max_epochs"] == 3
    assert (tmp_path / "best.pt").is_file()
    assert not list(tmp_path.glob("*.tmp"))


def test_override_reaches_the_object_it_configures() -> None:
    parts = build(parse(["model.hidden=[7,5]", "model.activation=tanh", "optim=momentum", "optim.lr=0.03",
                         "optim.momentum=0.7", "optim.nesterov=true"]))
    linears = [m for m in parts.model.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [7, 5, 10]
    assert any(isinstance(m, torch.nn.Tanh) for m in parts.model.modules())
    opt, _ = make_optimizer(parts)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and (group["lr"], group["momentum"], group["nesterov"]) == (0.03, 0.7, True)


def test_early_stopping_ends_the_run_and_restores_best(tmp_path) -> None:
    # a huge learning rate makes val/loss worse after the first epochs: the run must stop early
    report = run(["trainer.max_epochs=30", "model.hidden=[32]", "optim.lr=3.0", "early_stopping.patience=2",
                  "trainer.log_every_n_steps=0"], tmp_path)
    assert report["epochs"] < 30
    assert report["stop_reason"].startswith(("early stopping", "non-finite"))
    if report["stop_reason"].startswith("early stopping"):
        assert report["epochs"] == report["best_epoch"] + 2


@pytest.mark.parametrize("precision", ["bf16"])
def test_cpu_autocast_runs(tmp_path, fast, precision: str) -> None:
    report = run([*fast, f"trainer.precision={precision}"], tmp_path)
    assert report["test"]["test/acc"] > 0.5


def test_cnn_with_batch_norm_and_dropout_trains(tmp_path) -> None:
    report = run(["model=cnn", "model.batch_norm=true", "model.dropout=0.2", "optim=adam", "trainer.max_epochs=2",
                  "trainer.log_every_n_steps=5"], tmp_path)
    assert report["test"]["test/acc"] > 0.7
    assert "train/loss_step" in load_scalars(tmp_path)


def test_fp16_uses_a_grad_scaler_and_still_learns(tmp_path, fast) -> None:
    report = run([*fast, "trainer.precision=16"], tmp_path)
    assert report["test"]["test/acc"] > 0.5
    assert checkpoint.load(tmp_path / "last.pt")["scaler"]  # the scaler's state is saved for resume


@pytest.mark.slow
def test_compile_flag_trains_the_same_model(tmp_path, fast) -> None:
    eager = run(fast, tmp_path / "eager")
    compiled = run([*fast, "trainer.compile=true"], tmp_path / "compiled")
    assert compiled["final"]["val/loss"] == pytest.approx(eager["final"]["val/loss"], rel=1e-3)
    assert set(checkpoint.load(tmp_path / "compiled" / "last.pt")["model"]) == \
        set(checkpoint.load(tmp_path / "eager" / "last.pt")["model"])  # no _orig_mod. prefixes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_gpu_amp_channels_last_and_compile(tmp_path, precision: str) -> None:
    report = run(["model=cnn", "trainer.device=cuda", f"trainer.precision={precision}", "trainer.compile=true",
                  "trainer.max_epochs=2", "optim=adam", "optim.lr=0.01"], tmp_path)  # lr 0.01: 0.86-0.88 on CPU
    assert report["device"].startswith("cuda") and report["test"]["test/acc"] > 0.7


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_resume_keeps_adam_step_counters_on_the_cpu(tmp_path) -> None:
    """A CUDA `step` makes Adam read it with .item() every step; a resumed run must not bring it back on CUDA."""
    overrides = ["trainer.device=cuda", "optim=adam", "model.hidden=[16]", "trainer.log_every_n_steps=0"]
    run([*overrides, "trainer.max_epochs=1"], tmp_path)
    run([*overrides, "trainer.max_epochs=2", f"trainer.resume={tmp_path}"], tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)  # no map_location: tensors where they were
    assert saved["epoch"] == 2
    assert {s["step"].device.type for s in saved["optimizer"]["state"].values()} == {"cpu"}
    assert next(iter(saved["model"].values())).device.type == "cuda"


def test_summary_names_a_missing_split_instead_of_a_blank_line(tmp_path, fast) -> None:
    from dltrain.train import summary_text

    report = run([*fast, "data=synthetic", "data.test_size=0", "early_stopping.monitor=val/loss"], tmp_path)
    assert report["test"] == {}
    text = summary_text(report, tmp_path)
    assert "test   (no test split)" in text and "final  val/" in text
