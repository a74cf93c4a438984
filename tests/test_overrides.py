"""Command lines that used to crash with a traceback: each is now one line found before anything runs, or works."""
from __future__ import annotations

import pytest

from dltrain.cli import main as dltrain_cli
from dltrain.core.checkpoint import load
from tests.conftest import cli

QUICK = ["trainer.max_epochs=1", "model.hidden=[8]", "trainer.log_every_n_steps=0"]


@pytest.mark.parametrize("args, message", [
    (["optim.lr=" + "9" * 5000], "cannot read the override optim.lr=999"),
    (["hydra.run.dir=ü_run"], "cannot read the override hydra.run.dir=ü_run: token recognition error"),
    (["trainer.resume=it's/run"], "quote a value with special characters"),
    (["hydra.run.dir=" + "x" * 300], "hydra.run.dir: the folder name xxxx"),
])
def test_unreadable_overrides_are_one_line(args, message) -> None:
    problem = dltrain_cli.unreadable(args)
    assert problem is not None and message in problem and "\n" not in problem


@pytest.mark.parametrize("args, multirun, message", [
    (["=1"], False, "cannot expand the overrides"),
    (["optim.lr=range(0,1,0)"], True, "range() arg 3 must not be zero"),
])
def test_overrides_hydra_cannot_expand_are_one_line(args, multirun, message) -> None:
    problem = dltrain_cli.first_problem(args, multirun)
    assert problem is not None and message in problem


def test_quoted_paths_survive_hydras_grammar() -> None:
    for path in ("it's/run", 'say "hi"', "ü_run", "a b\\c"):
        assert dltrain_cli.override_value(f"hydra.run.dir={dltrain_cli.quoted(path)}") == path


def test_a_run_in_a_folder_with_an_apostrophe_resumes_and_m_may_come_last(tmp_path) -> None:
    first = cli([*QUICK, "hydra.run.dir=\"it's/run\""], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = cli(["trainer.max_epochs=2", "model.hidden=[8]", "trainer.resume=\"it's/run\""], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load(tmp_path / "it's" / "run" / "last.pt")["epoch"] == 2
    late_m = cli(["optim=adam", *QUICK, "-m", "optim.lr=0.1,0.01", "hydra.sweep.dir=s"], cwd=tmp_path)
    assert late_m.returncode == 0, late_m.stderr
    assert len(list((tmp_path / "s").rglob("metrics.json"))) == 2


@pytest.mark.parametrize("args, message", [
    (["-m", "optim=sgd,adam", "--cfg", "job"], "-m and --cfg cannot be used together"),
    (["--cfg=job", "--info"], "--cfg and --info cannot be used together"),
])
def test_two_of_hydras_modes_are_one_line(tmp_path, args, message) -> None:
    result = cli(args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"dltrain: error: {message}") and result.stderr.count("\n") == 1, result.stderr
    assert not list(tmp_path.iterdir()), "nothing ran"
    assert cli(["--cfg", "job", "optim=adam"], cwd=tmp_path).returncode == 0  # one mode alone still works
