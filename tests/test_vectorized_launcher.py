"""`hydra/launcher=vectorized` (issue 21), its plumbing: the same sweep leaves the same folders, files, lines and
table as with Hydra's basic launcher; one line per stack, one per job alone with its reason; a re-run skips the
finished jobs; a job refused at the door is recorded failed while the others train; Ctrl-C is one line with the
command that continues the sweep, and that command finishes every job. The grouping itself (run/stacking.py
plan_stacks) is tested as a pure function."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dltrain.run.stacking import Unit, plan_stacks, stack_groups
from tests.conftest import cli, compose

SWEEP = ["-m", "optim.lr=0.01,0.1", "trainer.seed=0,1", "trainer.max_epochs=2", "trainer.log_every_n_steps=0"]
VECTORIZED = "hydra/launcher=vectorized"
JOB_LINE = re.compile(r"^\[\d+/\d+\] ")


def shape(text: str) -> str:
    """A line's form: its numbers replaced (the two launchers' sweeps differ in wall times)."""
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", text).rstrip()


def folder_files(root: Path) -> dict[str, list[str]]:
    """Each job folder's files, event files by kind (their names hold a time and a process id), .hydra's too."""
    def kind(name: str) -> str:
        return re.sub(r"^events\.out\.tfevents\.\d+\..*\.\d+$", "events.out.tfevents.<run>", name)

    return {job.name: sorted([kind(p.name) for p in job.iterdir()] + [f".hydra/{p.name}" for p in (job / ".hydra").iterdir()])
            for job in root.iterdir() if job.is_dir()}


def table_rows(out: str, root: str) -> list[str]:
    """The end table's lines, the sweep folder's name as <root>."""
    return [re.sub(rf"\b{root}\b", "<root>", line) for line in out[out.index("sweep done:"):].splitlines()]


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The same 2x2 sweep of the default digits run, once with each launcher."""
    cwd = tmp_path_factory.mktemp("launchers")
    basic = cli([*SWEEP, "hydra.sweep.dir=basic"], cwd=cwd)
    assert basic.returncode == 0, basic.stderr
    stacked = cli([*SWEEP, VECTORIZED, "hydra.sweep.dir=stacked"], cwd=cwd)
    assert stacked.returncode == 0, stacked.stderr
    return cwd, basic, stacked


def test_a_vectorised_sweep_leaves_what_the_basic_launcher_leaves(both) -> None:
    cwd, basic, stacked = both
    files = folder_files(cwd / "stacked")
    assert files == folder_files(cwd / "basic") and len(files) == 4
    for names in files.values():
        assert {"config.yaml", "metrics.json", "last.pt", "best.pt", "dltrain.log", "events.out.tfevents.<run>",
                ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= set(names), names
    for job in files:  # each member's log holds its own epochs and summary, as a job's does
        log = (cwd / "stacked" / job / "dltrain.log").read_text()
        assert log.count("epoch 1/2") == 1 and f"run dir {cwd / 'stacked' / job}" in log, log
        ours, theirs = (json.loads((cwd / root / job / "metrics.json").read_text()) for root in ("stacked", "basic"))
        assert set(ours) - {"launcher"} == set(theirs), job
    lines = {name: [line for line in run.stdout.splitlines() if JOB_LINE.match(line)]
             for name, run in (("basic", basic), ("stacked", stacked))}
    assert len(lines["stacked"]) == 4 and sorted(map(shape, lines["stacked"])) == sorted(map(shape, lines["basic"]))
    ours, theirs = table_rows(stacked.stdout, "stacked"), table_rows(basic.stdout, "basic")
    assert [shape(r) for r in ours[:3]] == [shape(r) for r in theirs[:3]] and ours[-1] == theirs[-1]  # title, header
    assert sorted(map(shape, ours[3:-1])) == sorted(map(shape, theirs[3:-1])) and len(ours) == len(theirs) == 13  # runs, then seeds
    assert stacked.stdout.count("vectorized: stacking jobs 1-4 (4 members)\n") == 1
    assert "vectorized" not in basic.stdout
    assert not (cwd / "stacked" / ".dltrain-jobs").exists()  # the ledger was read and removed, as the basic one
    assert not list((cwd / "stacked").glob("*/.dltrain.lock"))  # every job's lock released


def test_a_rerun_of_a_finished_vectorised_sweep_skips_every_job(both) -> None:
    cwd, _, _ = both
    again = cli([*SWEEP, VECTORIZED, "hydra.sweep.dir=stacked"], cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(already finished; skipped)") == 4 and "vectorized:" not in again.stdout


def test_a_job_refused_at_the_door_fails_while_its_stack_trains(tmp_path) -> None:
    ran = cli(["-m", "optim.lr=0.01,0.1,-1", "trainer.max_epochs=1", "trainer.log_every_n_steps=0", VECTORIZED,
               "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert ran.returncode == 1, ran.stderr
    assert "vectorized: stacking jobs 1, 2 (2 members)" in ran.stdout
    assert re.search(r"^\[3/3\] optim\.lr=-1 .* failed .*optim\.lr=-1 must be >= 0$", ran.stdout, re.M), ran.stdout
    assert "dltrain: 1 job(s) failed: optim.lr=-1 (error: optim.lr=-1 must be >= 0)" in ran.stderr
    record = json.loads((tmp_path / "sweep" / "optim.lr=-1" / "metrics.json").read_text())
    assert record["status"] == "failed" and record["wall_seconds"] >= 0
    for job in ("optim.lr=0.01", "optim.lr=0.1"):
        assert json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())["status"] == "completed"


def test_points_that_cannot_share_a_stack_run_alone_and_say_why(tmp_path) -> None:
    ran = cli(["-m", "model=mlp,cnn", "trainer.max_epochs=1", "trainer.log_every_n_steps=0", VECTORIZED,
               "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    alone = [line for line in ran.stdout.splitlines() if line.startswith("vectorized:")]
    assert alone == [f"vectorized: job {a} alone: model.name, model.channels, model.head (+7 more) differ from job {b}, "
                     "which must be equal within a stack" for a, b in ((1, 2), (2, 1))], ran.stdout
    assert len([line for line in ran.stdout.splitlines() if JOB_LINE.match(line)]) == 2
    for job in ("model=mlp", "model=cnn"):
        assert json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())["status"] == "completed"


def test_the_plan_says_how_the_vectorised_launcher_would_stack(tmp_path) -> None:
    planned = cli(["plan", "-m", "optim.lr=0.01,0.1,0.3", "trainer.devices=1,2", "trainer.max_epochs=1", VECTORIZED,
                   "hydra.launcher.max_members=2"], cwd=tmp_path, timeout=120)
    assert planned.returncode == 0, planned.stderr
    groups = [line.strip() for line in planned.stdout.splitlines() if line.startswith("  group ")]
    assert [g.split(", ~")[0].split(", each ~")[0] for g in groups] == [
        "group 1: stacking jobs 1, 3 (2 members)", "group 2: job 2 alone: trainer.devices > 1 (DDP) trains alone",
        "group 3: job 4 alone: trainer.devices > 1 (DDP) trains alone",
        "group 4: job 5 alone: left over by hydra.launcher.max_members=2",
        "group 5: job 6 alone: trainer.devices > 1 (DDP) trains alone"], planned.stdout
    assert "this sweep's launcher trains each job on its own" not in planned.stdout
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_is_one_line_that_continues_the_sweep(tmp_path) -> None:
    args = ["-m", "optim.lr=0.01,0.1", "trainer.seed=0,1", "trainer.max_epochs=30", "early_stopping=none",
            "model.hidden=[16]", "trainer.log_every_n_steps=0", VECTORIZED, "hydra.sweep.dir=sweep"]
    exe = Path(sys.executable).parent / "dltrain"
    proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while not list((tmp_path / "sweep").glob("*/last.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C hits the whole group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltrain: interrupted with "), err
    command = lines[0].split("; continue the sweep with: ")[1]
    assert shlex.split(command) == ["dltrain", *args]  # the sweep's command as typed (its folder given)
    ended = len([line for line in out.splitlines() if JOB_LINE.match(line)])
    first = tmp_path / "sweep" / "optim.lr=0.01,trainer.seed=0"  # the stack's output so far is in its log
    assert "epoch 1/30" in (first / "dltrain.log").read_text() and not list(tmp_path.glob("sweep/*/.dltrain.lock"))
    assert f"with {ended} of 4 job(s) ended" in lines[0]
    again = cli(shlex.split(command)[1:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(already finished; skipped)") == ended
    for job in (tmp_path / "sweep").iterdir():
        if job.is_dir():
            report = json.loads((job / "metrics.json").read_text())
            assert report["status"] == "completed" and report["epochs"] == 30, (job, report)


def test_kill_9_then_the_same_command_ends_every_member_as_an_uninterrupted_sweep(tmp_path) -> None:
    """A vectorised sweep killed at once (no handler runs) and re-run: every member resumes from its own last.pt
    (they may stand at different epochs) and ends with the metrics of the same sweep never interrupted (trained
    here, in this process, by the launcher's own trainer: it is only the numbers to compare with, not what the
    test is about); each member's TensorBoard history has one value per epoch."""
    from dltrain.run.stacked import Member, train_stack
    from tests.conftest import load_scalars, parse

    common = ["trainer.max_epochs=8", "early_stopping=none", "model.hidden=[16]", "trainer.log_every_n_steps=0"]
    args = ["-m", "optim.lr=0.01,0.1", "trainer.seed=0,1", *common, VECTORIZED]
    points = [[f"optim.lr={lr}", f"trainer.seed={seed}"] for lr in ("0.01", "0.1") for seed in (0, 1)]
    members = [Member(parse([*p, *common]), tmp_path / "reference" / ",".join(p), [*p, *common]) for p in points]
    reference = train_stack(members, lambda i, report: None)
    assert [r["status"] for r in reference] == ["completed"] * 4 and all(r["launcher"] == "vectorized" for r in reference)
    exe = Path(sys.executable).parent / "dltrain"
    proc = subprocess.Popen([str(exe), *args, "hydra.sweep.dir=sweep"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "sweep").glob("*/last.pt"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    again = cli([*args, "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    jobs = sorted(p for p in (tmp_path / "reference").iterdir() if p.is_dir())
    assert [job.name for job in jobs] == sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    for job in jobs:
        ours, theirs = (json.loads((tmp_path / root / job.name / "metrics.json").read_text())
                        for root in ("sweep", "reference"))
        assert ours["status"] == "completed" and ours["epochs"] == 8 and ours["launcher"] == "vectorized"
        assert ours["final"]["val/loss"] == pytest.approx(theirs["final"]["val/loss"], rel=1e-5), job.name
        assert ours["test"]["test/acc"] == pytest.approx(theirs["test"]["test/acc"], abs=1e-3), job.name
        steps = [step for step, _ in load_scalars(tmp_path / "sweep" / job.name)["val/loss"]]
        assert steps == list(range(1, 9)), (job.name, steps)


# ---- the grouping (run/stacking.py), a pure function of the configs -----------------------------------------------

def test_per_member_keys_include_early_stopping_init_and_label_smoothing() -> None:
    base = ["model.hidden=[16]"]
    same = [compose(base), compose([*base, "early_stopping.patience=2", "label_smoothing=0.1", "model.init=normal",
                                    "+model.init_args={std:0.01}", "early_stopping=none"])]
    assert stack_groups([*same, compose([*base, "model.activation=tanh"])]) == [[0, 1], [2]]


def test_plan_stacks_caps_groups_and_says_why_a_job_is_alone() -> None:
    mlp, cnn = compose(["optim.lr=0.1"]), compose(["model=cnn"])
    units = plan_stacks([mlp, mlp, None, cnn, mlp, mlp, mlp], [None, None, None, None, "DDP", None, None], cap=2)
    assert [(u.jobs, u.reason) for u in units[:2]] == [([0, 1], None), ([3], units[1].reason)]
    assert units[1].reason.startswith("model.name, ") and "differ from jobs 1, 2, 6, 7" in units[1].reason
    assert units[2:] == [Unit([4], "DDP"), Unit([5, 6])]
    assert [u.jobs for u in plan_stacks([mlp] * 5, [None] * 5)] == [[0, 1, 2, 3, 4]]  # no cap: one stack
    assert plan_stacks([mlp], [None])[0].reason == "no other job to stack it with"


def test_a_job_derived_from_a_composed_one_equals_hydras_own_composition() -> None:
    """sweep/validated.py: a job that differs from one already composed only in plain values is derived from it;
    the result equals Hydra's load_sweep_config of that job, Hydra's own node (overrides, override_dirname)
    included. A group choice or a mapping value is composed by Hydra."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from dltrain.core.conf_dirs import config_dir
    from dltrain.sweep.validated import skip_validation

    sweep = ["optim.lr=0.01,0.1", "trainer.seed=0,1", "optim=adam"]
    jobs = [["optim.lr=0.01", "optim.betas=[0.9,0.99]", "trainer.seed=0", "optim=adam"],
            ["optim.lr=0.1", "optim.betas=[0.8,0.9]", "trainer.seed=1", "optim=adam"],
            ["optim.lr=0.1", "optim.weight_decay=0.1", "trainer.seed=1", "optim=adamw"],  # another group: composed
            ["optim.lr=0.1", "+model.init_args={std:0.1}", "trainer.seed=1", "optim=adam"]]  # an add: composed
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=sweep, run_mode=RunMode.MULTIRUN)
        hydras_own = loader.load_sweep_config
        expected = [OmegaConf.to_yaml(hydras_own(master, job)) for job in jobs]
        wrapper = skip_validation(loader)
        assert wrapper(master, jobs[0]) is None  # the sweeper's check composes nothing
        wrapper.launching = True
        got = [OmegaConf.to_yaml(wrapper(master, job)) for job in jobs]
    assert got == expected
    dirnames = [next(line for line in text.splitlines() if "override_dirname:" in line) for text in got[:2]]
    assert dirnames[0] != dirnames[1] and "optim.lr=0.1" in dirnames[1]  # the derived job's own, not its template's
