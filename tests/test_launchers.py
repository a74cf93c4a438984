"""Sweeps through Hydra's other launchers and sweepers (the `sweep` extra): submitit (local twin of SLURM), joblib
and Optuna. Statuses, the exit code and the table come from the sweep folder whatever process ran the job; a
diverged or failed trial gives Optuna the worst value for its direction, and the study goes on."""
from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import cli, run

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the sweep extra: pip install -e '.[sweep]'")
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the sweep extra: pip install -e '.[sweep]'")

TINY = ["data=digits", "model=mlp", "model.hidden=[32]", "trainer.max_epochs=2", "trainer.log_every_n_steps=0"]
THREE = ["optim.lr=0.1,1e12,-1"]  # learns; diverges (non-finite loss); refused by torch's own range check


def assert_three_jobs_reported(result, sweep) -> None:
    assert result.returncode == 1, result.stderr  # a job failed: the sweep says so in its exit code
    lines = result.stdout.splitlines()
    for name, status in [("optim.lr=0.1", "completed"), ("optim.lr=1000000000000.0", "diverged"),
                         ("optim.lr=-1", "failed")]:  # one line per job as it ended, printed by the sweep
        assert any(name in line and f" {status} " in line for line in lines if re.match(r"\[\d/3\] ", line)), result.stdout
    assert "sweep done: 3 job(s), 2 ran to their end, 1 failed" in result.stdout
    assert result.stderr.strip().endswith("dltrain: 1 job(s) failed: optim.lr=-1 (error: optim.lr=-1 must be >= 0)")
    assert not (sweep / ".dltrain-jobs").exists() and not (sweep / ".submitit" / "%j").exists()
    assert (sweep / "optim.lr=0.1" / "dltrain.log").is_file()  # each job's own log in its own folder


@pytest.mark.slow
def test_a_submitit_sweep_reports_each_job_and_fails_with_the_failed_one(tmp_path) -> None:
    result = cli(["-m", "hydra/launcher=submitit_local", *TINY, *THREE, "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert_three_jobs_reported(result, tmp_path / "sweep")
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_joblib_sweep_reports_each_job_once(tmp_path) -> None:
    result = cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, *THREE, "hydra.sweep.dir=sweep"],
                 cwd=tmp_path)
    assert_three_jobs_reported(result, tmp_path / "sweep")
    assert len(re.findall(r"^\[\d/3\] ", result.stdout, re.M)) == 3  # the workers print none themselves


@pytest.mark.slow
def test_an_optuna_study_goes_on_past_diverged_trials(tmp_path) -> None:
    # seed 3 samples lr 1.1e4, 6.2e5, 16, 4.2e3, 6.6e7, 7.2e7, 0.24, 1.9: the large ones diverge, two learn
    result = cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=8", "hydra.sweeper.sampler.seed=3",
                  "optim.lr=tag(log,interval(0.01,1e9))", "hydra.sweeper.storage=sqlite:///study.db",
                  "hydra.sweeper.study_name=lr", *TINY, "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "A new study created" in result.stderr and "\x1b" not in result.stdout + result.stderr  # no colour codes
    statuses = [line.split()[-2] for line in result.stdout.splitlines() if re.match(r"\[\d\] ", line)]
    assert len(statuses) == 8 and "diverged" in statuses, result.stdout
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_value"] < 1.5 and best["best_params"]["optim.lr"] < 10  # well below chance (ln 10 = 2.30)
    assert (tmp_path / "study.db").stat().st_size > 0  # the study is in sqlite: it can be resumed or analysed


def test_the_slurm_example_composes_onto_submitit(tmp_path) -> None:
    from hydra import compose, initialize_config_dir

    from dltrain.core.conf_dirs import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.tasks_per_node=4"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_task, launcher.max_num_timeout) == (4, 1, 3)
    # without SLURM here, choosing it is one line (submitit's own error is a traceback)
    result = cli(["-m", "hydra/launcher=slurm", *TINY, "optim=sgd,adam"], cwd=tmp_path,
                 env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and result.stderr.startswith("dltrain: error: hydra/launcher=slurm submits jobs "
                                                               "to a SLURM cluster, and this machine has no sbatch")


@pytest.mark.slow
def test_a_submitit_job_of_two_tasks_is_one_ddp_run_equal_to_one_process(tmp_path) -> None:
    """hydra.launcher.tasks_per_node=2: the job's two tasks form one DDP group (rank 0 writes and reports), and
    with the same global batch the run ends where one process ends."""
    import json

    sweep = cli(["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", *TINY, "optim=sgd,adam",
                 "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    assert len(re.findall(r"^\[\d/2\] ", sweep.stdout, re.M)) == 2, sweep.stdout  # one line per job, not per task
    alone = run([*TINY, "optim=sgd"], tmp_path / "single")  # the one process, in this one (not about the CLI)
    job = json.loads((tmp_path / "sweep" / "optim=sgd" / "metrics.json").read_text())
    assert job["world_size"] == 2 and alone["world_size"] == 1
    assert job["best"] == pytest.approx(alone["best"], rel=1e-5)
    assert job["test"]["test/acc"] == pytest.approx(alone["test"]["test/acc"])
    from dltrain.core.hparams import EXPERIMENT_FILE

    logged = [p.name for p in (tmp_path / "sweep" / "optim=sgd").glob("events.out.tfevents.*")]
    assert len(logged) == 2 and EXPERIMENT_FILE in logged  # rank 0's event file, and the sweep's HParams experiment


@pytest.mark.slow
def test_an_optuna_study_on_accuracy_maximises_it(tmp_path) -> None:
    """Each job returns its best val/acc; Optuna minimises by default, which searched for the least accurate runs.
    The study's direction now follows the monitored metric."""
    import json

    result = cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
                  "hydra.sweeper.sampler.seed=1", "optim.lr=tag(log,interval(0.001,1.0))",
                  "early_stopping.monitor=val/acc", *TINY, "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = [json.loads(p.read_text())["best"] for p in (tmp_path / "sweep").glob("*/metrics.json")]
    assert len(found) == 3 and len(set(found)) == 3, found
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(found))


def test_an_optuna_study_told_to_minimise_accuracy_is_refused_before_any_job(tmp_path) -> None:
    result = cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=minimize", "hydra.sweeper.n_trials=2",
                  "optim.lr=tag(log,interval(0.001,1.0))", "early_stopping.monitor=val/acc", *TINY,
                  "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("dltrain: error: hydra.sweeper.direction=minimize searches for the worst runs: "
                                     "a higher val/acc is better (early_stopping.mode=max, the value each job "
                                     "returns); use hydra.sweeper.direction=maximize, or leave it out")
    assert not (tmp_path / "sweep").exists()
