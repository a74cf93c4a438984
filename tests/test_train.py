"""End-to-end runs of the engine on real data (scikit-learn digits): what a run writes and logs, and what its
flags (restore_best, deterministic, channels_last, a per-step schedule) really do."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

import dltrain.run.assemble
from dltrain.core import checkpoint
from dltrain.run.assemble import build, make_optimizer, make_settings
from dltrain.tools.evaluation import evaluate_run, load_run
from tests.conftest import FAST, load_scalars, parse, run


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """One short default run (3 epochs), shared by the tests that read what a run writes."""
    run_dir = tmp_path_factory.mktemp("fast")
    return run_dir, run(FAST, run_dir)


def test_default_run_learns_and_reports(fast_run) -> None:
    run_dir, report = fast_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["status"] == "completed" and saved["epochs"] == 3 and saved["world_size"] == 1
    assert saved["stop_reason"] == "max_epochs reached"
    assert saved["test"]["test/acc"] > 0.7  # 3 epochs of SGD on digits; chance is 0.1
    assert saved["final"]["val/loss"] < 1.5 < 2.3  # started near ln(10) = 2.30
    for key in ("best", "best_epoch", "train_seconds", "samples_per_sec", "monitor", "git_commit"):
        assert key in saved
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["hidden"] == [32]


def test_tensorboard_scalars_have_the_fixed_tags(fast_run) -> None:
    run_dir, _ = fast_run
    scalars = load_scalars(run_dir)
    for tag in ("train/loss", "val/loss", "val/acc", "z_more/lr", "z_more/test/loss", "z_more/test/acc",
                "z_more/throughput/samples_per_sec"):
        assert tag in scalars, tag
    assert [step for step, _ in scalars["val/loss"]] == [1, 2, 3]
    losses = [v for _, v in scalars["train/loss"]]
    assert losses[-1] < losses[0]


def test_checkpoints_hold_everything_to_resume(fast_run) -> None:
    run_dir, report = fast_run
    saved = checkpoint.load(run_dir / "last.pt")
    assert saved["epoch"] == 3 and saved["step"] == 3 * 17  # 1078 train samples at batch 64
    assert {"model", "optimizer", "scaler", "best", "callbacks", "rng", "config", "git_commit"} <= set(saved)
    assert (saved["git_commit"], saved["provenance"]) == (report["git_commit"], report["provenance"])  # one origin
    assert saved["callbacks"]["EarlyStopping"] == {"wait": 0, "reason": ""} and saved["best"]["epoch"] == 3
    assert yaml.safe_load(saved["config"])["trainer"]["max_epochs"] == 3
    assert (run_dir / "best.pt").is_file()
    assert not list(run_dir.glob("*.tmp"))


def test_override_reaches_the_object_it_configures() -> None:
    parts = build(parse(["model.hidden=[7,5]", "model.activation=tanh", "optim=momentum", "optim.lr=0.03",
                         "optim.momentum=0.7", "optim.nesterov=true"]))
    linears = [m for m in parts.model.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [7, 5, 10]
    assert any(isinstance(m, torch.nn.Tanh) for m in parts.model.modules())
    opt, _ = make_optimizer(parts)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and (group["lr"], group["momentum"], group["nesterov"]) == (0.03, 0.7, True)


# val/loss starts near ln(10) = 2.3, so no later epoch can beat the first by min_delta=10: epoch 1 stays the best
# on any platform, while the later epochs do learn (their weights test better, which restore_best must undo).
STOP = ["model.hidden=[32]", "early_stopping.min_delta=10", "early_stopping.patience=2", "trainer.log_every_n_steps=0"]


@pytest.fixture(scope="module")
def stopped_early(tmp_path_factory):
    """A run that early stopping ends at epoch 3 (best epoch 1, patience 2), shared by the restore_best tests."""
    run_dir = tmp_path_factory.mktemp("stopped")
    return run_dir, run([*STOP, "trainer.max_epochs=30"], run_dir)


def test_early_stopping_ends_the_run_and_restores_best(stopped_early) -> None:
    run_dir, report = stopped_early
    assert report["stop_reason"].startswith("early stopping: val/loss did not improve by more than 10 for 2 epochs")
    assert report["best_epoch"] == 1 and report["epochs"] == report["best_epoch"] + 2 == 3
    assert checkpoint.load(run_dir / "best.pt")["epoch"] == 1 and checkpoint.load(run_dir / "last.pt")["epoch"] == 3
    assert report["test"]["test/loss"] == pytest.approx(evaluate_run(load_run(run_dir))["test/loss"], rel=1e-6)


def test_restore_best_tests_the_best_epochs_weights(stopped_early) -> None:
    """metrics.json's test metrics are those of best.pt's weights (epoch 1), not of the last epoch's."""
    run_dir, report = stopped_early
    best = evaluate_run(load_run(run_dir))  # best.pt
    last = evaluate_run(load_run(run_dir, prefer_best=False))  # last.pt
    assert abs(last["test/loss"] - best["test/loss"]) > 0.05  # the two are easy to tell apart
    assert set(report["test"]) == {"test/loss", "test/acc"}
    for key, value in report["test"].items():
        assert value == pytest.approx(best[key], rel=1e-6), key


def test_restore_best_survives_a_resume_after_the_best_epoch(stopped_early, tmp_path) -> None:
    """Interrupted after epoch 2 (its best was epoch 1) and resumed: it stops and tests like the uninterrupted run."""
    _, straight = stopped_early
    run([*STOP, "trainer.max_epochs=2"], tmp_path)
    resumed = run([*STOP, "trainer.max_epochs=30", f"trainer.resume={tmp_path}"], tmp_path)
    assert (resumed["epochs"], resumed["best_epoch"]) == (straight["epochs"], straight["best_epoch"]) == (3, 1)
    assert resumed["stop_reason"] == straight["stop_reason"]
    assert resumed["best"] == pytest.approx(straight["best"], rel=1e-6)
    for key, value in straight["test"].items():  # the best epoch's weights, not the resumed run's last ones
        assert resumed["test"][key] == pytest.approx(value, rel=1e-6), key
    last = evaluate_run(load_run(tmp_path, prefer_best=False))
    assert abs(last["test/loss"] - resumed["test"]["test/loss"]) > 0.05  # which would test differently


ONE_EPOCH = ["trainer.max_epochs=1", "model.hidden=[32]", "trainer.log_every_n_steps=0"]


@pytest.mark.parametrize("before", [(False, False), (True, True)], ids=["off", "on_warn_only"])
def test_deterministic_mode_is_on_during_the_run_and_as_it_was_afterwards(tmp_path, monkeypatch, before) -> None:
    during = []
    real_fit = dltrain.run.assemble.fit  # what an assembled run fits with

    def recording_fit(*args, **kwargs):
        during.append((torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled()))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(dltrain.run.assemble, "fit", recording_fit)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what the run sets for cuBLAS; undone after the test
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    try:
        report = run([*ONE_EPOCH, "trainer.deterministic=true"], tmp_path)
        after = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    assert report["status"] == "completed" and report["epochs"] == 1
    assert during == [(True, False)]  # strict (not warn-only) deterministic algorithms while fitting
    assert after == before


def test_channels_last_on_cpu_trains_the_same_model_in_nhwc(tmp_path) -> None:
    cnn = ["model=cnn", "optim=adam", "optim.lr=0.01", "trainer.device=cpu", "trainer.max_epochs=1", "trainer.log_every_n_steps=0"]
    nhwc = run([*cnn, "trainer.channels_last=true"], tmp_path / "nhwc")
    nchw = run([*cnn, "trainer.channels_last=false"], tmp_path / "nchw")
    assert nhwc["final"]["val/loss"] == pytest.approx(nchw["final"]["val/loss"], rel=1e-4)
    assert nhwc["final"]["val/loss"] < 1.5  # it learned (chance: ln(10) = 2.3)

    def conv_weight(run_dir):  # one with several input channels: with one, both layouts have the same strides
        weights = checkpoint.load(run_dir / "last.pt")["model"]
        return next(w for w in weights.values() if w.dim() == 4 and w.shape[1] > 1)

    assert conv_weight(tmp_path / "nhwc").is_contiguous(memory_format=torch.channels_last)
    assert not conv_weight(tmp_path / "nhwc").is_contiguous()  # NHWC strides, not NCHW ones
    assert conv_weight(tmp_path / "nchw").is_contiguous()


def test_a_per_step_cosine_reaches_min_lr_when_batch_norm_drops_the_last_batch(tmp_path) -> None:
    """With batch norm a last batch of 1 sample is dropped; the schedule's length counts only the steps the
    engine takes, so the cosine ends at min_lr exactly when the run ends (not a step later or earlier)."""
    overrides = ["model.batch_norm=true", "model.hidden=[32]", "data.batch_size=359", "sched=cosine",
                 "sched.interval=step", "sched.min_lr=0.01", "trainer.max_epochs=2", "trainer.log_every_n_steps=0"]
    run(overrides, tmp_path)
    saved = checkpoint.load(tmp_path / "last.pt")
    parts = build(parse(overrides))
    assert len(parts.data.train) == 3 * 359 + 1  # a last batch of 1 sample each epoch
    assert saved["step"] == 2 * 3  # 3 steps an epoch: the 1-sample batch is dropped
    _, scales = make_optimizer(parts)
    lr_at = make_settings(parts, len(parts.data.train), scales).lr_at
    last_lr = saved["optimizer"]["param_groups"][0]["lr"]  # the lr the engine set for its last step
    assert last_lr == pytest.approx(lr_at(saved["step"] - 1)) and last_lr > 0.01 + 1e-3
    assert lr_at(saved["step"]) == pytest.approx(0.01)  # the decay reaches min_lr exactly at the run's end


@pytest.mark.parametrize("precision", ["bf16"])
def test_cpu_autocast_runs(tmp_path, fast, precision: str) -> None:
    report = run([*fast, f"trainer.precision={precision}"], tmp_path)
    assert report["test"]["test/acc"] > 0.5


def test_cnn_with_batch_norm_and_dropout_trains(tmp_path) -> None:
    report = run(["model=cnn", "model.batch_norm=true", "model.dropout=0.2", "optim=adam", "trainer.max_epochs=2",
                  "trainer.log_every_n_steps=5"], tmp_path)
    assert report["test"]["test/acc"] > 0.7
    assert "z_more/train/loss_step" in load_scalars(tmp_path)


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
    from dltrain.core.metrics_file import summary_text

    report = run([*fast, "data=synthetic", "data.test_size=0", "early_stopping.monitor=val/loss"], tmp_path)
    assert report["test"] == {}
    text = summary_text(report, tmp_path)
    assert "test   (no test split)" in text and "final  val/" in text


def test_one_process_assembles_and_fits_several_runs_that_share_nothing(tmp_path) -> None:
    """assemble is the unit a launcher calls per run: two runs assembled side by side in one process each own
    their model, optimizer, data and callbacks, and fit as the same run alone does (the same metrics)."""
    from dltrain.run.assemble import assemble

    config = parse(["model.hidden=[16]", "trainer.max_epochs=2", "trainer.log_every_n_steps=0", "trainer.device=cpu"])
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    threads = torch.get_num_threads()
    try:  # assemble sets the run's threads for the process; train.train restores them, so does this test
        first, second = (assemble(config, tmp_path / name, torch.device("cpu")) for name in ("a", "b"))
        assert first.state.raw_model is not second.state.raw_model and first.callbacks[0] is not second.callbacks[0]
        assert first.splits[0].x.data_ptr() != second.splits[0].x.data_ptr()
        first.fit()
        second.fit()
    finally:
        torch.set_num_threads(threads)
    assert first.state.metrics["val/loss"] == pytest.approx(second.state.metrics["val/loss"], rel=1e-6)
    assert first.state.epoch == second.state.epoch == 2
    assert (tmp_path / "a" / "last.pt").is_file() and (tmp_path / "b" / "last.pt").is_file()
