"""Checkpoints: resuming an interrupted run ends where an uninterrupted one does; writes are atomic;
bad files give one clear error."""
from __future__ import annotations

import pytest
import torch

from dltrain.core import checkpoint
from dltrain.core.registry import ConfigError
from tests.conftest import cli, load_scalars, run

# dropout makes the global RNG state matter; a step schedule makes the epoch counter matter
RUN = ["model.hidden=[32]", "model.dropout=0.2", "optim=adam", "sched=step", "sched.boundaries=[2]",
       "trainer.log_every_n_steps=0", "early_stopping.patience=100"]


def test_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run([*RUN, "trainer.max_epochs=4"], straight)
    run([*RUN, "trainer.max_epochs=2"], interrupted)  # "interrupted" after epoch 2
    report = run([*RUN, "trainer.max_epochs=4", f"trainer.resume={interrupted}"], interrupted)
    assert report["epochs"] == 4
    a = checkpoint.load(straight / "last.pt")["model"]
    b = checkpoint.load(interrupted / "last.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [s for s, _ in load_scalars(interrupted)["val/loss"]]
    assert sorted(set(steps)) == [1, 2, 3, 4]  # one TensorBoard run continued, not a new one


def test_cli_resume_continues_in_the_same_run_dir(tmp_path) -> None:
    run([*RUN, "trainer.max_epochs=1"], tmp_path / "run1")
    second = cli([*RUN, "trainer.max_epochs=2", "trainer.resume=run1"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "epoch 2/2" in second.stdout and "epoch 1/2" not in second.stdout
    assert checkpoint.load(tmp_path / "run1" / "last.pt")["epoch"] == 2
    assert not (tmp_path / "outputs").exists()


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    checkpoint.save_atomic({"format": checkpoint.FORMAT, "model": {"w": torch.ones(2)}}, target)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save_atomic({"format": checkpoint.FORMAT, "model": {"w": torch.zeros(2)}}, target)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(target)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "is not a readable dltrain checkpoint"),
    (b"", "is not a readable dltrain checkpoint"),  # an empty file: torch's error has no message
    (None, "no checkpoint at"),
])
def test_bad_checkpoint_files_are_one_line_errors(tmp_path, content, message) -> None:
    path = tmp_path / "last.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        checkpoint.load(tmp_path)


def test_foreign_pickle_is_refused(tmp_path) -> None:
    torch.save({"format": checkpoint.FORMAT, "model": {}, "evil": object()}, tmp_path / "x.pt")
    with pytest.raises(ConfigError, match=r"holds a Python object \(object\) that a safe load refuses") as err:
        checkpoint.load(tmp_path / "x.pt")
    assert "weights_only" not in str(err.value) and "trust" not in str(err.value)  # not torch's unsafe advice


def test_resume_that_cannot_continue_is_one_line_and_keeps_the_run(tmp_path) -> None:
    run([*RUN, "trainer.max_epochs=1"], tmp_path / "run1")
    files_before = {str(p.relative_to(tmp_path)): p.read_bytes() for p in (tmp_path / "run1").rglob("*") if p.is_file()}
    for change, message in [(["model.hidden=[8]"], "the checkpoint does not fit this model: 1.bias is (32,) there "
                                                   "but (8,) here; the run was trained with model.hidden=[32] (here "
                                                   "[8]), which cannot change mid-run: resume without overriding "
                                                   "them (trainer.resume=DIR alone takes the run's own)"),
                            (["optim=sgd"], "the checkpoint was trained with optim=adam (Adam), which cannot "
                                            "continue as SGD; resume with optim=adam"),
                            (["trainer.max_epochs=1"], "the run to resume already trained 1 epochs; set "
                                                       "trainer.max_epochs above 1")]:
        with pytest.raises(ConfigError) as err:
            run([*RUN, "trainer.max_epochs=3", *change, f"trainer.resume={tmp_path / 'run1'}"], tmp_path / "run1")
        assert len(err.value.problems) == 1 and err.value.problems[0].startswith(message), err.value.problems
    # the command line: exit code 2 and the one line alone
    second = cli([*RUN, "trainer.max_epochs=3", "optim=sgd", "trainer.resume=run1"], cwd=tmp_path)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert lines == ["dltrain: error: the checkpoint was trained with optim=adam (Adam), which cannot continue as SGD; "
                     "resume with optim=adam"], second.stderr
    after = {str(p.relative_to(tmp_path)): p.read_bytes() for p in (tmp_path / "run1").rglob("*") if p.is_file()}
    assert {name: after.get(name) for name in files_before} == files_before  # the run's files are untouched
    assert set(after) - set(files_before) <= {"run1/dltrain.log"} and not after.get("run1/dltrain.log")  # Hydra's
    # (empty) log of the rejected command: the run trained in-process above, so it had none


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(tmp_path) -> None:
    # epoch 1 at a sane lr (a finite last.pt), then an lr of 1e12 from epoch 2 on: the run diverges in epoch 2
    report = run(["model.hidden=[32]", "sched=step", "sched.boundaries=[1]", "sched.values=[0.1,1e12]",
                  "trainer.max_epochs=5", "trainer.log_every_n_steps=0"], tmp_path)
    assert report["stop_reason"] == "non-finite val/loss or train/loss at epoch 2" and report["epochs"] == 2
    saved = checkpoint.load(tmp_path / "last.pt")
    assert saved["epoch"] == 1  # epoch 2's NaN weights never overwrote it
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert report["best_epoch"] == 1 and report["test"]["test/acc"] > 0.3  # tested with epoch 1's weights
