"""`dltrain trainer.resume=DIR` continues the run in DIR with its own overrides and experiment; the command line's
overrides apply on top, reported in one line; the line that an interruption prints (Ctrl-C, SIGTERM, SIGUSR1, a
killed sweep job) continues the run, pasted as is, to the end of an uninterrupted one; a run of a project resumes
only in that project; a run folder of dltrain 0.1.0 (tests/fixtures/release_run) still resumes, evaluates, predicts
and exports."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dltrain.core import checkpoint
from dltrain.core.registry import ConfigError
from dltrain.run import resume, resuming
from tests.conftest import REPO, cli
from tests.conftest import run as run_in_process

FIXTURE = REPO / "tests" / "fixtures" / "release_run"
SMALL = ["model.hidden=[16]", "trainer.max_epochs=3", "early_stopping=none", "optim.lr=0.05",
         "trainer.log_every_n_steps=0"]


def signalled(args: list[str], cwd: Path, sig: str, epoch: int = 1) -> subprocess.CompletedProcess:
    """`dltrain ARGS` that receives the signal `sig` as soon as epoch `epoch`'s checkpoints are written."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "DLTRAIN_TEST_SIGNAL": sig,
           "DLTRAIN_TEST_EPOCH": str(epoch)}
    return subprocess.run([sys.executable, "-c", "import tests.faults as f; f.signal_after_epoch_cli()", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def pasted(stderr: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command after `resume with:` in the last line of `stderr`, run as is in `cwd` (as a shell would split it)."""
    line = stderr.strip().splitlines()[-1]
    assert "resume with: " in line, stderr
    words = shlex.split(line.split("resume with: ", 1)[1])
    assert words[0] == "dltrain", line
    return cli(words[1:], cwd=cwd)


def assert_same_end(straight: Path, resumed: Path) -> None:
    """The same weights, epochs, best epoch and test metrics as the uninterrupted run."""
    a, b = checkpoint.load(straight / "last.pt")["model"], checkpoint.load(resumed / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = (json.loads((d / "metrics.json").read_text()) for d in (straight, resumed))
    keys = ("status", "epochs", "best", "best_epoch", "test", "stop_reason")
    assert {k: ra[k] for k in keys} == {k: rb[k] for k in keys}


def ctrl_c_then_paste(args: list[str], cwd: Path, sig: str, code: int,
                      straight: Path | None = None) -> tuple[Path, subprocess.CompletedProcess]:
    """The uninterrupted run (`straight`, made here unless given) and the run stopped by `sig` after epoch 1 (`run`),
    resumed by pasting."""
    if straight is None:
        made = cli([*args, "hydra.run.dir=straight"], cwd=cwd)
        assert made.returncode == 0, made.stderr
        straight = cwd / "straight"
    stopped = signalled([*args, "hydra.run.dir=run"], cwd, sig)
    assert stopped.returncode == code, stopped.stderr
    resumed = pasted(stopped.stderr, cwd)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_end(straight, cwd / "run")
    return cwd / "run", resumed


def straight_run(args: list[str], run_dir: Path) -> Path:
    """The uninterrupted run of `dltrain ARGS`, trained in this process: it is only the end to compare with (what
    is tested is the interrupted CLI run and the pasted command). Bit-equal to the CLI's: a run chooses its threads
    by its config and cores (run/threads.py), and tests/test_checkpoint.py compares in-process runs bitwise too."""
    report = run_in_process(args, run_dir)
    assert report["status"] == "completed", report
    return run_dir


@pytest.fixture(scope="module")
def small_straight(tmp_path_factory) -> Path:
    """The uninterrupted SMALL run, made once for the tests that compare an interrupted SMALL run with it."""
    return straight_run(SMALL, tmp_path_factory.mktemp("small") / "straight")


# ---- the printed command continues the run ---------------------------------------------------------------------

def test_ctrl_c_then_the_printed_command_ends_as_the_uninterrupted_run(small_straight, tmp_path) -> None:
    run, resumed = ctrl_c_then_paste(SMALL, tmp_path, "SIGINT", 130, small_straight)
    assert "epoch 2/3" in resumed.stdout and "epoch 3/3" in resumed.stdout
    assert "changed for this resume" not in resumed.stdout  # nothing was changed
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["early_stopping"]["enabled"] is False and config["optim"]["lr"] == 0.05


def test_sigterm_of_an_experiment_then_the_printed_command_ends_as_the_uninterrupted_run(tmp_path) -> None:
    args = ["experiment=gan_digits", "trainer.max_epochs=2"]
    straight = straight_run(args, tmp_path / "straight")
    run, _ = ctrl_c_then_paste(args, tmp_path, "SIGTERM", 143, straight)
    assert yaml.safe_load((run / "config.yaml").read_text())["task"] == "adversarial"


def test_a_killed_sweep_job_resumes_with_its_own_overrides(small_straight, tmp_path) -> None:
    """Ctrl-C in the first job of a sweep: the printed command (its folder, `optim.lr=0.05`, quoted for Hydra)
    finishes that job as a single run with its overrides (SMALL's) would have ended."""
    sweep = ["-m", "optim.lr=0.05,0.1", *[a for a in SMALL if not a.startswith("optim.lr")], "hydra.sweep.dir=sweep"]
    stopped = signalled(sweep, tmp_path, "SIGINT")
    assert stopped.returncode == 130, stopped.stderr
    resumed = pasted(stopped.stderr, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert 'trainer.resume="' in stopped.stderr.strip().splitlines()[-1]  # the job's folder, quoted for Hydra
    assert_same_end(small_straight, tmp_path / "sweep" / "optim.lr=0.05")


# ---- overrides on top of the run's own, reported in one line; kept by the next resume ---------------------------

def test_overrides_change_the_run_in_one_line_and_a_second_resume_keeps_them(tmp_path) -> None:
    first = cli([*SMALL[:1], "trainer.max_epochs=1", *SMALL[2:], "hydra.run.dir=run"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = cli(["trainer.resume=run", "trainer.max_epochs=2", "optim.lr=0.02", "model.hidden=[16]"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    changed = [line for line in again.stdout.splitlines() if "changed for this resume" in line]
    assert changed == ["changed for this resume: optim.lr 0.05 -> 0.02, trainer.max_epochs 1 -> 2"], again.stdout
    third = cli(["trainer.resume=run", "trainer.max_epochs=3"], cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert [line for line in third.stdout.splitlines() if "changed" in line] == [
        "changed for this resume: trainer.max_epochs 2 -> 3"], third.stdout
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (config["optim"]["lr"], config["early_stopping"]["enabled"], config["model"]["hidden"]) == (0.02, False, [16])
    record = yaml.safe_load((tmp_path / "run" / "resume.yaml").read_text())
    assert record == {"overrides": ["model.hidden=[16]", "trainer.max_epochs=3", "early_stopping=none",
                                    "optim.lr=0.02", "trainer.log_every_n_steps=0"], "project": None}
    refused = cli(["trainer.resume=run", "trainer.max_epochs=4", "model.hidden=[8]"], cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "model.hidden=[16] (here [8]), which cannot change mid-run" in refused.stderr
    assert yaml.safe_load((tmp_path / "run" / "resume.yaml").read_text()) == record  # a refused resume changes nothing
    marker = tmp_path / "pwned"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    planted = {**record, "overrides": [*record["overrides"], f"plugins=[{tmp_path / 'evil.py'}]"]}
    (tmp_path / "run" / "resume.yaml").write_text(yaml.safe_dump(planted))
    named = cli(["trainer.resume=run", "trainer.max_epochs=4"], cwd=tmp_path)  # a run folder names code: refused
    assert named.returncode == 2 and len(named.stderr.strip().splitlines()) == 1, named.stderr
    assert "code is never imported because a run folder names it" in named.stderr and not marker.exists()


# ---- a run of a user's project -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proj") / "myproj"
    made = cli(["init", str(root)], cwd=root.parent)
    assert made.returncode == 0, made.stderr
    return root


def test_a_project_run_resumes_in_its_project_and_only_there(project, tmp_path) -> None:
    """SIGUSR1 (SLURM's warning) in the project folder: the printed command continues it there. From another folder
    it is one line naming the project's folder; a run launched with --config-dir prints a command that names it."""
    args = ["model.width=8", "trainer.max_epochs=3", "trainer.log_every_n_steps=0"]
    run, _ = ctrl_c_then_paste(args, project, "SIGUSR1", 143)
    elsewhere = cli([f"trainer.resume={run}", "trainer.max_epochs=4"], cwd=tmp_path)
    assert elsewhere.returncode == 2 and len(elsewhere.stderr.strip().splitlines()) == 1, elsewhere.stderr
    assert f"was trained in the project {project.resolve()}: resume it from that folder" in elsewhere.stderr
    stopped = signalled(["--config-dir", str(project / "conf"), *args, "hydra.run.dir=named"], tmp_path, "SIGINT")
    assert stopped.returncode == 130 and f"--config-dir {project / 'conf'}" in stopped.stderr, stopped.stderr
    resumed = pasted(stopped.stderr, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_end(project / "straight", tmp_path / "named")


# ---- a run of dltrain 0.1.0 --------------------------------------------------------------------------------------

def test_a_run_folder_of_the_previous_release_resumes_evaluates_predicts_and_exports(tmp_path) -> None:
    from sklearn.datasets import load_digits
    from typer.testing import CliRunner

    from dltrain.cli.commands import app

    old = shutil.copytree(FIXTURE, tmp_path / "old")
    assert not (old / "resume.yaml").exists()
    np.save(tmp_path / "three.npy", load_digits().images[:3, None].astype(np.float32))
    for args, expect in [(["eval", str(old)], "test/acc"), (["predict", str(old), str(tmp_path / "three.npy")], "[2]"),
                         (["export", str(old)], "torchscript: wrote")]:
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0 and expect in done.stdout, (args, done.stdout, done.stderr)
    resumed = cli([f"trainer.resume={old}"], cwd=tmp_path)  # its .hydra/overrides.yaml: hidden [4], adam, 2 epochs
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 2/2" in resumed.stdout and "changed for this resume" not in resumed.stdout
    assert checkpoint.load(old / "last.pt")["epoch"] == 2 and resuming.completed(old)
    assert yaml.safe_load((old / "resume.yaml").read_text())["overrides"][:4] == [
        "data=digits", "model=mlp", "model.hidden=[4]", "optim=adam"]


# ---- the command line's pieces -----------------------------------------------------------------------------------

@pytest.mark.parametrize("recorded, given, merged", [
    (["model.hidden=[16]", "trainer.max_epochs=3"], ["trainer.max_epochs=5"], ["model.hidden=[16]", "trainer.max_epochs=5"]),
    (["trainer.max_epochs=1", "trainer.max_epochs=3"], [], ["trainer.max_epochs=3"]),  # Hydra's last one counts
    (["experiment=gan_digits"], ["trainer.resume=x"], ["experiment=gan_digits", "trainer.resume=x"]),
    (["+callbacks.a={every:1}"], ["callbacks.a={every:2}"], ["+callbacks.a={every:2}"]),  # still an addition
    (["++x.y=1"], ["x.y=2"], ["++x.y=2"]),
    (["+callbacks.a={every:1}"], ["~callbacks.a"], []),  # the key exists only by the recorded addition
    (["~model.dropout"], ["+model.dropout=0.1"], ["model.dropout=0.1"]),  # the base config has it
    (["early_stopping=none"], ["~early_stopping"], ["~early_stopping"]),
])
def test_merge_puts_the_command_line_on_top_key_by_key(recorded, given, merged) -> None:
    assert resume.merge(recorded, given) == merged


def test_neither_hydras_overrides_nor_the_resume_itself_are_recorded(tmp_path) -> None:
    overrides = ["model.hidden=[16]", "trainer.resume=/a/run", "hydra.searchpath=[file:///p/conf]", "hydra/launcher=basic"]
    resume.record(tmp_path, overrides, None)
    assert resume.read_record(tmp_path) == (["model.hidden=[16]"], None)
    (tmp_path / "resume.yaml").write_text("overrides: model.hidden\n")
    with pytest.raises(ConfigError, match=r"resume.yaml is damaged .*delete it to resume with the first launch's"):
        resume.read_record(tmp_path)


def test_the_printed_command_quotes_what_hydra_or_the_shell_would_misread() -> None:
    assert resume.command(Path("/r/run")) == "dltrain trainer.resume=/r/run"
    job = resume.command(Path("/r/sweep/optim.lr=0.05"))
    assert job == """dltrain 'trainer.resume="/r/sweep/optim.lr=0.05"'"""
    assert shlex.split(job)[1] == 'trainer.resume="/r/sweep/optim.lr=0.05"'


def test_a_release_run_names_its_project_by_hydras_search_path(tmp_path) -> None:
    """A run of dltrain 0.1.0 has no resume.yaml: its first launch's overrides and the project on its search path
    stand in, and it resumes only in that project (or one named with --config-dir)."""
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- model.width=8\n- trainer.max_epochs=3\n")
    (tmp_path / ".hydra" / "hydra.yaml").write_text("hydra:\n  searchpath:\n  - file:///p/myproj/conf\n")
    assert resume.read_record(tmp_path) == (["model.width=8", "trainer.max_epochs=3"], "/p/myproj")
    here = resume.project_problem(tmp_path, "/p/myproj", None, named=False)
    assert f"the run {tmp_path} was trained in the project /p/myproj: resume it from that folder" in here
    assert resume.project_problem(tmp_path, "/p/myproj", None, named=True) is None
    assert "trained outside any project, and this folder is the project /q" in \
        resume.project_problem(tmp_path, None, "/q", named=False)
