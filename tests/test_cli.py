"""The `dltrain` command as users type it: help, sweeps, the runs table, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli

QUICK = ["trainer.max_epochs=2", "model.hidden=[16]", "trainer.log_every_n_steps=0"]


def test_help_lists_subcommands_and_groups_without_importing_torch() -> None:
    code = ("import sys; sys.argv = ['dltrain', '--help']\nfrom dltrain.cli import main\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip().endswith("NO-TORCH")
    for word in ("runs", "board", "optim", "adamw", "inverse_time", "early_stopping", "digits"):
        assert word in out


def hparams_of(run_dir: Path) -> tuple[dict, list[str]]:
    """The HParams plugin's session (hyper-parameters) and the metric tags of the experiment."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    def content(tag: str):
        return plugin_data_pb2.HParamsPluginData.FromString(acc.SummaryMetadata(tag).plugin_data.content)
    start = content("_hparams_/session_start_info").session_start_info
    experiment = content("_hparams_/experiment").experiment
    values = {k: v.string_value or v.number_value or v.bool_value for k, v in start.hparams.items()}
    return values, [m.name.tag for m in experiment.metric_infos]


def test_sweep_makes_one_named_tensorboard_run_per_job(tmp_path) -> None:
    result = cli(["-m", "optim=sgd,adam", "sched=step,exponential", *QUICK, "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == [f"model.hidden=[16],optim={o},sched={s},trainer.log_every_n_steps=0,trainer.max_epochs=2"
                    for o in ("adam", "sgd") for s in ("exponential", "step")]
    metric_sets = set()
    for job in jobs:
        values, metrics = hparams_of(tmp_path / "sweep" / job)
        assert values["optim.name"] in job and values["sched.name"] in job
        metric_sets.add(tuple(sorted(metrics)))
    assert len(metric_sets) == 1  # the same metric keys in every run: the HParams table lines up
    assert {"best/val/loss", "test/acc", "final/val/loss", "epochs"} <= set(next(iter(metric_sets)))

    table = cli(["runs", "sweep"], cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert len(lines) == 2 + 4 and "optim=adam" in table.stdout
    best_column = [float(line.split()[2]) for line in lines[2:]]
    assert best_column == sorted(best_column)  # sorted by the monitored metric, best first


def test_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path) -> None:
    result = cli(["-m", "optim.lr=0.1,-1", *QUICK, "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert result.returncode == 1
    assert "optim.lr=-1 must be >= 0" in result.stderr and "1 job(s) failed" in result.stderr
    reports = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("metrics.json")}
    statuses = sorted(r["status"] for r in reports.values())
    assert statuses == ["completed", "failed"]
    rerun = cli(["-m", "optim.lr=0.1,-1", *QUICK, "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert "already finished; skipped" in rerun.stdout  # a re-run skips finished jobs


@pytest.mark.parametrize("args, message", [
    (["model=transformer"], "unknown model 'transformer'; valid: "),
    (["optim=sgd", "optim.momentum=0.9"], "optim.momentum is not an option of optim=sgd; valid: lr, weight_decay"),
    (["optim.lr=-0.1"], "optim.lr=-0.1 must be >= 0"),
    (["optim.lr=fast"], "optim.lr='fast' has the wrong type for optim=sgd: expected float"),
    (["model.dropout=1.0"], "model.dropout=1.0 must be in [0, 1)"),
    (["early_stopping.patience=-1"], "early_stopping.patience=-1 must be >= 0"),
    (["early_stopping.monitor=val/f1"], "early_stopping.monitor=val/f1 is not a metric of this run"),
    (["model.hidden=[]"], "model.hidden must list at least one layer width"),
    (["sched=step", "sched.values=[0.1,0.01]"], "needs len(boundaries) + 1 = 3"),
    (["sched=exponential", "sched.decay_steps=0"], "sched.decay_steps=0 must be > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be >= 1"),
    (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
    (["model=cnn", "data=synthetic", "data.shape=[64]"], "model=cnn needs image inputs"),
    (["model=cnn", "model.channels=[6,16,32,64]", "model.padding=0"], "shrinks to nothing"),
    (["trainer.resume=nowhere"], "no checkpoint at nowhere"),
    (["data=synthetic", "data.val_size=0"], "the validation split is empty"),
    (["+data.augment.flp=true"], "data.augment.flp is not an option of data.augment; valid: crop_padding"),
    (["-m", "optim=sgd,foo"], "unknown optim 'foo'; valid: adadelta, adagrad, adam"),
    (["-m", "optim=sgd,adam", "optim.momentum=0.9"], "optim.momentum is not an option of optim=sgd"),
    (["bord"], "'bord' is neither a sub-command (board, runs, eval, export, generate) nor an override KEY=VALUE"),
    (["~model"], "the config has no model group; choose one (model=NAME"),
    (["model=gan"], "model=gan with task=classification cannot take the data's samples of shape (1, 8, 8) "
                    "(model=gan trains with task=adversarial)"),
    (["denoise=abc"], "denoise='abc' has the wrong type: expected int or float"),
    (["data=diabetes", "label_smoothing=0.1"], "label_smoothing=0.1 applies to task=classification only"),
    (["trainer.device=tpu"], "trainer.device='tpu' is not a choice of trainer; valid: 'auto' | 'cpu' | 'cuda'"),
    (["trainer.devices=2", "data.batch_size=1"], "data.batch_size=1 is smaller than trainer.devices=2"),
    (["model.init_args={mean:0.0}"], "To append to your config use +model.init_args={mean:0.0}"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, args, message) -> None:
    result = cli(args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("metrics.json"))  # nothing trained
    assert not list(tmp_path.rglob(".hydra"))  # and no empty run folder is left behind


@pytest.mark.slow
def test_non_editable_install_runs_from_any_folder(tmp_path) -> None:
    """`pip install .` (a real wheel, no source tree on the path) finds conf/ inside the package."""
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(site), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert (site / "dltrain" / "conf" / "config.yaml").is_file()
    assert (site / "dltrain" / "conf" / "model" / "mlp.yaml").is_file()
    assert (site / "dltrain" / "conf" / "experiment" / "optimizers.yaml").is_file()
    code = ("import sys; from dltrain.cli import main; from dltrain.config import config_dir; "
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

    result = cli([*QUICK, "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
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
    assert result.stderr.strip() == "dltrain: error: nowhere is not a directory; give a run or sweep directory"


def test_runs_marks_a_metrics_file_of_the_wrong_shape_unreadable(tmp_path) -> None:
    (tmp_path / "sweep" / "job").mkdir(parents=True)
    (tmp_path / "sweep" / "job" / "metrics.json").write_text("[1, 2]")
    result = cli(["runs", "sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "unreadable" in result.stdout
