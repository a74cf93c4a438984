"""Fine-tuning: `trainer.init_from` starts a new run from a trained one's weights (strict: bit-identical; partial: a new
head left fresh, said in one line), `trainer.freeze` keeps parameters (and the running statistics of a frozen
batch-norm layer) fixed, `trainer.lr_scales` gives the body a fraction of the head's rate; the source is recorded in
metrics.json and checkpoints, never re-applied on resume; bad inputs are one line each."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dltrain.core.registry import ConfigError
from dltrain.run.assemble import assemble
from dltrain.run.config import RunConfig
from tests.conftest import cli, compose, parse, run

MLP = ["model=mlp", "model.hidden=[16]", "trainer.max_epochs=2", "trainer.log_every_n_steps=0", "optim.lr=0.1"]
CNN = ["model=cnn", "model.channels=[4,8]", "model.head=[16]", "model.batch_norm=true", "trainer.max_epochs=2",
       "trainer.log_every_n_steps=0", "optim.lr=0.1"]
TWO_CLASSES = ["data=synthetic", "data.shape=[1,8,8]", "data.num_classes=2", "data.train_size=200",
               "data.val_size=50", "data.test_size=50"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained MLP on digits (10 classes): the run to start from."""
    folder = tmp_path_factory.mktemp("source") / "run"
    run(MLP, folder)
    return folder


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assembled(overrides: list[str], run_dir: Path):  # noqa: ANN201
    run_dir.mkdir(parents=True, exist_ok=True)
    return assemble(parse(overrides), run_dir, torch.device("cpu"))


def test_strict_load_is_bit_identical_to_the_source_best_weights(source: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    built = assembled([*MLP, f"trainer.init_from={source}"], tmp_path / "a")
    best = weights(source / "best.pt")
    ours = built.parts.model.state_dict()
    assert list(ours) == list(best) and all(torch.equal(ours[k], best[k]) for k in best)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"trainer.init_from={source} (best.pt, epoch") and "loaded 4 tensors" in line
    assert "skipped 0; left fresh 0" in line
    # a checkpoint file is taken as it is: last.pt of the same run
    built = assembled([*MLP, f"trainer.init_from={source / 'last.pt'}"], tmp_path / "b")
    last = weights(source / "last.pt")
    assert all(torch.equal(built.parts.model.state_dict()[k], last[k]) for k in last)


def test_the_source_is_recorded_in_metrics_json_and_checkpoints(source: Path, tmp_path: Path) -> None:
    report = run([*MLP, f"trainer.init_from={source}"], tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())["init_from"]
    assert record == report["init_from"]
    assert record["path"] == str((source / "best.pt").resolve()) and record["file"] == "best.pt"
    assert record["model"] == "mlp" and record["data"] == "digits" and record["mode"] == "strict"
    assert record["metrics"]["status"] == "completed" and "test/acc" in record["metrics"]["test"]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["init_from"] == record


def test_partial_loads_the_body_and_leaves_a_new_head_fresh(source: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError) as err:  # strict by default: one line, and the way out
        assembled([*MLP, *TWO_CLASSES, f"trainer.init_from={source}"], tmp_path / "strict")
    assert err.value.problems == [
        f"trainer.init_from={source} (best.pt, epoch {torch.load(source / 'best.pt')['epoch']}) does not fit this "
        "model: 0 missing, 0 unexpected, 2 mismatched (3.weight: (10, 16) there vs (2, 16) here; 3.bias: (10,) "
        "there vs (2,) here); use trainer.init_mode=partial to load what matches"]
    built = assembled([*MLP, *TWO_CLASSES, f"trainer.init_from={source}", "trainer.init_mode=partial"], tmp_path / "p")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.endswith("loaded 2 tensors; skipped 2 (3.weight: (10, 16) there vs (2, 16) here; 3.bias: (10,) "
                         "there vs (2,) here); left fresh 2 (3.weight; 3.bias)")
    best, ours = weights(source / "best.pt"), built.parts.model.state_dict()
    assert torch.equal(ours["1.weight"], best["1.weight"]) and torch.equal(ours["1.bias"], best["1.bias"])
    assert ours["3.weight"].shape == (2, 16)
    assert built.origin["init_from"]["fresh"] == ["3.weight", "3.bias"]


def test_freeze_keeps_weights_and_batch_norm_statistics(tmp_path: Path) -> None:
    run([*CNN, "trainer.max_epochs=1"], tmp_path / "src")
    before = weights(tmp_path / "src" / "best.pt")
    run([*CNN, f"trainer.init_from={tmp_path / 'src'}", "trainer.freeze=[0,1]"], tmp_path / "ft")
    after = weights(tmp_path / "ft" / "last.pt")
    for key in ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(after[key], before[key]), key  # frozen conv and its batch norm: bit-identical
    assert not torch.equal(after["5.running_mean"], before["5.running_mean"])  # a trained bn layer's stats move
    assert not torch.equal(after["4.weight"], before["4.weight"])


def test_frozen_parameters_are_not_in_the_optimizer_and_lr_scales_scale_the_body(source: Path, tmp_path: Path) -> None:
    built = assembled([*MLP, f"trainer.init_from={source}", "trainer.freeze=[1.bias]",
                       "trainer.lr_scales={1:0.1}"], tmp_path)
    model = built.parts.model
    names = {id(p): n for n, p in model.named_parameters()}
    state = built.fit()
    lrs = {names[id(p)]: g["lr"] for g in state.optimizer.param_groups for p in g["params"]}
    assert set(lrs) == {"1.weight", "3.weight", "3.bias"} and not model.get_parameter("1.bias").requires_grad
    assert lrs["1.weight"] == pytest.approx(0.1 * lrs["3.weight"]) and lrs["3.weight"] == pytest.approx(0.1)


def test_bad_inputs_are_one_line_each(source: Path, tmp_path: Path) -> None:
    def door(overrides: list[str], base: list[str] = MLP) -> list[str]:
        with pytest.raises(ConfigError) as err:
            RunConfig.parse(compose([*base, *overrides]), inputs=True)
        return err.value.problems

    empty, damaged = tmp_path / "empty", tmp_path / "damaged.pt"
    empty.mkdir()
    damaged.write_bytes((source / "best.pt").read_bytes()[:500])
    assert door([f"trainer.init_from={tmp_path / 'nowhere'}"]) == [
        f"trainer.init_from={tmp_path / 'nowhere'}: no such file or folder; give a run folder (its best.pt, else "
        "last.pt is used) or a checkpoint file"]
    assert door([f"trainer.init_from={empty}"])[0].endswith("the folder holds neither best.pt nor last.pt; give a "
                                                             "run folder of a trained run, or a checkpoint file")
    assert "truncated or damaged" in door([f"trainer.init_from={damaged}"])[0]
    assert door(["model=gan", "task=adversarial", f"trainer.init_from={source}"], base=[]) == [
        f"trainer.init_from={source} holds a model=mlp (not generative), which cannot start a model=gan "
        "(generative); start from a run of a model of its kind"]
    assert door(["trainer.lr_scales={1:0}", "trainer.init_mode=partial"]) == [
        "trainer.lr_scales.1=0 must be a number > 0 (a factor of the schedule's rate; to keep parameters fixed, "
        "use trainer.freeze)", "trainer.init_mode=partial needs trainer.init_from (the run or checkpoint to start from)"]
    with pytest.raises(ConfigError) as err:  # what a pattern matches needs the model: assemble
        assembled([*MLP, "trainer.freeze=[body]"], tmp_path / "x")
    assert err.value.problems == ["trainer.freeze: 'body' matches no parameter of this model; its parameters are: "
                                  "1.weight, 1.bias, 3.weight, 3.bias (a name, a module prefix such as 0, or an "
                                  "fnmatch pattern such as '3.*')"]
    with pytest.raises(ConfigError, match=r"freezes every parameter of the model: nothing would train"):
        assembled([*MLP, "trainer.freeze=['*']"], tmp_path / "y")


def test_resume_of_a_fine_tuned_run_takes_its_own_weights(source: Path, tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(source, copy)
    tuned = tmp_path / "tuned"
    run([*MLP, "trainer.max_epochs=1", f"trainer.init_from={copy}"], tuned)
    shutil.rmtree(copy)  # the source is gone: a resume must not need it
    report = run([*MLP, f"trainer.init_from={copy}", f"trainer.resume={tuned}"], tuned)  # as resume.yaml replays it
    assert report["epochs"] == 2 and report["init_from"]["path"] == str((copy / "best.pt").resolve())
    with pytest.raises(ConfigError) as err:  # init_from beside resume, for a run that did not start from it
        run([*MLP, f"trainer.init_from={source}", f"trainer.resume={tuned}"], tuned)
    assert err.value.problems == [
        f"trainer.init_from={source} with trainer.resume={tuned}: resume continues a run (weights from its own "
        f"last.pt), init_from starts a new one (that run started from {copy}); drop one"]


def test_cli_refuses_a_missing_source_in_one_line(tmp_path: Path) -> None:
    done = cli(["trainer.max_epochs=1", f"trainer.init_from={tmp_path / 'nowhere'}"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"dltrain: error: trainer.init_from={tmp_path / 'nowhere'}: no such file or "
                                   "folder; give a run folder (its best.pt, else last.pt is used) or a checkpoint file")


def test_cli_resume_of_a_fine_tuned_run_replays_init_from_without_reading_it(tmp_path: Path) -> None:
    """`dltrain trainer.resume=DIR` replays the run's overrides, trainer.init_from among them: the source is not
    read again (it is gone here), the frozen layers and their optimizer groups come back as they were."""
    source, tuned = tmp_path / "source", tmp_path / "tuned"
    base = ["model.hidden=[16]", "trainer.log_every_n_steps=0", "trainer.max_epochs=1"]
    run(base, source)  # the source is only a checkpoint to start from: trained in this process
    done = cli([*base, f"hydra.run.dir={tuned}", f"trainer.init_from={source}", "trainer.freeze=[1]"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"trainer.init_from={source} (best.pt, epoch 1): loaded 4 tensors; skipped 0; left fresh 0" in done.stdout
    frozen = weights(tuned / "last.pt")["1.weight"]
    shutil.rmtree(source)
    done = cli([f"trainer.resume={tuned}", "trainer.max_epochs=2"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "loaded" not in done.stdout
    report = json.loads((tuned / "metrics.json").read_text())
    assert report["epochs"] == 2 and report["init_from"]["path"] == str((source / "best.pt").resolve())
    assert report["init_from"]["frozen"] == ["1.weight", "1.bias"]
    assert torch.equal(weights(tuned / "last.pt")["1.weight"], frozen)
