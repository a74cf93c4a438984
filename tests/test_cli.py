"""The `dltrain` command as users type it: help, sweeps, the runs table, and one-line errors."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dltrain.cli import main as cli_module
from tests.conftest import REPO, cli, load_scalars, run

QUICK = ["trainer.max_epochs=2", "model.hidden=[16]", "trainer.log_every_n_steps=0"]


def test_help_lists_subcommands_and_groups_without_importing_torch() -> None:
    code = ("import sys; sys.argv = ['dltrain', '--help']\nfrom dltrain.cli.main import main\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip().endswith("NO-TORCH")
    for word in ("runs", "board", "optim", "adamw", "inverse_time", "early_stopping", "digits"):
        assert word in out


def test_help_in_dltrains_own_clone_says_its_conf_is_dltrains_not_a_project() -> None:
    result = cli(["--help"], cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "project's own choices" not in result.stdout
    assert f"(dltrain's own configs, from {REPO / 'conf'}; a project of your own: dltrain init DIR)" in result.stdout


@pytest.mark.parametrize("command, arguments", [("predict", "RUN FILE..."), ("runs", "[DIRECTORY]"),
                                                ("plan", "[OVERRIDES...]")])
def test_sub_command_help_names_its_arguments_as_a_user_writes_them(tmp_path, command, arguments) -> None:
    result = cli([command, "--help"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Usage: dltrain {command} [OPTIONS] {arguments}"
    assert "<list[" not in result.stdout and "{" not in result.stdout  # typer's {run} and <list[Path]>
    rows = result.stdout[result.stdout.index("Arguments:"):result.stdout.index("Options:")].split("\n")[1:]
    assert [row.split()[0] for row in rows if row[:3].strip()] == arguments.strip("[]").split()


@pytest.fixture
def in_process_cli(monkeypatch):
    """For `cli.run_hydra` in this process: undo what a real command may change for good (argv, environment
    variables, the logging handlers Hydra installs)."""
    import logging
    import os

    monkeypatch.setattr(sys, "argv", ["dltrain"])
    environ, root = dict(os.environ), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    os.environ.clear()
    os.environ.update(environ)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_failed_job_is_recorded_and_the_sweep_goes_on_returning_each_jobs_value(tmp_path, monkeypatch, capsys,
                                                                                 in_process_cli) -> None:
    """A real `dltrain -m` sweep (Hydra's basic sweeper and launcher), run in-process: each job returns to the
    sweeper (Optuna optimizes it) its best monitored value, or the worst value (+inf for a minimized val/loss) when
    it failed: NaN would stop an Optuna study."""
    returned: dict[float, float] = {}
    real_function = cli_module.job_function

    def recording_function(line):
        real_job = real_function(line)

        def recording_job(cfg):
            returned[cfg.optim.lr] = real_job(cfg)
            return returned[cfg.optim.lr]

        return recording_job

    monkeypatch.setattr(cli_module, "job_function", recording_function)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli_module.run_hydra(["-m", "optim.lr=0.1,-1", *QUICK, "hydra.sweep.dir=sweep"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "optim.lr=-1 must be >= 0" in err and "1 job(s) failed" in err
    jobs = {"optim.lr=0.1" in p.parent.name: p.parent for p in (tmp_path / "sweep").rglob("metrics.json")}
    completed, failed = (json.loads((jobs[ok] / "metrics.json").read_text()) for ok in (True, False))
    assert completed["status"] == "completed" and failed["status"] == "failed"
    assert "optim.lr=-1 must be >= 0" in failed["error"]
    val_losses = [v for _, v in load_scalars(jobs[True])["val/loss"]]
    assert len(val_losses) == 2 and completed["best"] == pytest.approx(min(val_losses), rel=1e-6)  # the best epoch's
    assert returned[0.1] == completed["best"] and returned[-1] == math.inf

    returned.clear()
    try:  # a re-run skips the finished job (the failed one's exit code is checked above)
        cli_module.run_hydra(["-m", "optim.lr=0.1,-1", *QUICK, "hydra.sweep.dir=sweep"])
    except SystemExit:
        pass
    assert "already finished; skipped" in "".join(capsys.readouterr())
    assert returned[0.1] == completed["best"] and returned[-1] == math.inf  # the skipped job still reports its value


# A few cases end to end, one per place that rejects input; tests/test_bad_input.py has every message in-process.
@pytest.mark.parametrize("args, message", [
    (["model=transformer"], "unknown model 'transformer'; valid: "),  # composition (before Hydra starts)
    (["-m", "optim=sgd,foo"], "unknown optim 'foo'; valid: adadelta, adagrad, adam"),  # a sweep's choices
    (["bord"], f"'bord' is neither a sub-command ({', '.join(cli_module.SUBCOMMANDS)}) nor an override KEY=VALUE"),
    (["trainer.resume=nowhere"], "no checkpoint at nowhere"),  # before Hydra makes a run folder there
    (["optim.lr=-0.1"], "optim.lr=-0.1 must be >= 0"),  # the door, inside the Hydra job
    (["early_stopping.monitor=val/f1"], "early_stopping.monitor=val/f1 is not a metric of this run"),  # build
])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, args, message) -> None:
    result = cli(args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("metrics.json"))  # nothing trained
    assert not list(tmp_path.rglob(".hydra"))  # and no empty run folder is left behind


@pytest.mark.slow
def test_non_editable_install_runs_from_any_folder(tmp_path, wheel_site) -> None:
    """`pip install .` (a real wheel, no source tree on the path) finds conf/ inside the package."""
    site = wheel_site
    assert (site / "dltrain" / "conf" / "config.yaml").is_file()
    assert (site / "dltrain" / "conf" / "model" / "mlp.yaml").is_file()
    assert (site / "dltrain" / "conf" / "experiment" / "optimizers.yaml").is_file()
    code = ("import sys; from dltrain.cli.main import main; from dltrain.run.config import config_dir; "
            "print('CONF', config_dir()); sys.argv = ['dltrain', 'experiment=optimizers', 'trainer.max_epochs=1', "
            "'hydra.run.dir=r']; main()")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert f"CONF {site}" in out.stdout and (tmp_path / "r" / "metrics.json").is_file()


def test_board_serves_tensorboard_on_a_run(tmp_path) -> None:
    import socket
    import time
    import urllib.request

    run(QUICK, tmp_path / "run")
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).parent / "dltrain"
    server = subprocess.Popen([str(exe), "board", "run", "--port", str(port)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                runs = urllib.request.urlopen(f"http://localhost:{port}/data/runs", timeout=2).read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "TensorBoard did not start"
                time.sleep(0.5)
        assert runs.strip() == '["."]'  # the run directory itself is the one TensorBoard run
    finally:
        server.terminate()
        server.wait(timeout=30)
    with pytest.raises(OSError):  # stopping `dltrain board` stopped TensorBoard too (no orphan server)
        urllib.request.urlopen(f"http://localhost:{port}/data/runs", timeout=2)


@pytest.mark.parametrize("args", [["runs", "nowhere"], ["board", "nowhere"]])
def test_runs_and_board_on_a_missing_directory_are_one_line(tmp_path, args) -> None:
    result = cli(args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"dltrain: error: nowhere is not a directory (looked in {tmp_path}, the working "
                                     "folder); give a run or sweep directory")


def test_runs_marks_a_metrics_file_of_the_wrong_shape_unreadable(tmp_path) -> None:
    (tmp_path / "sweep" / "job").mkdir(parents=True)
    (tmp_path / "sweep" / "job" / "metrics.json").write_text("[1, 2]")
    result = cli(["runs", "sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "unreadable" in result.stdout
