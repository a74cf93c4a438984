"""Sweeps as users compare them: job names from the swept keys, a real TensorBoard server opening on the train and
val curves of every job with the HParams tab comparing the swept keys, one line per job and the table at the end,
statuses and exit codes."""
from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dltrain.core.metrics_file import numbers, status_of
from dltrain.sweep import plan as sweeps
from dltrain.sweep.runs_table import runs_table
from tests.conftest import cli, run

QUICK = ["trainer.max_epochs=2", "model.hidden=[16]", "trainer.log_every_n_steps=0"]
OPTIMS, SCHEDS = ("sgd", "adam"), ("step", "exponential", "inverse_time")
NAMES = sorted(f"optim={o},sched={s}" for o in OPTIMS for s in SCHEDS)


@pytest.fixture(scope="module")
def six(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A real 2x3 sweep, run once for the tests below."""
    cwd = tmp_path_factory.mktemp("six")
    result = cli(["-m", f"optim={','.join(OPTIMS)}", f"sched={','.join(SCHEDS)}", *QUICK, "hydra.sweep.dir=sweep"],
                 cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "sweep", result


def test_jobs_are_named_by_the_swept_keys_only(six) -> None:
    root, _ = six
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == NAMES  # not model.hidden=[16],...,trainer...
    plan = json.loads((root / "sweep.json").read_text())
    assert plan["swept"] == {"optim": list(OPTIMS), "sched": list(SCHEDS)}


def hparams_of(run_dir: Path) -> dict:
    """The HParams plugin's session of a run: its hyper-parameter values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.string_value or v.number_value or v.bool_value for k, v in start.hparams.items()}


def test_sweep_makes_one_named_tensorboard_run_per_job(six) -> None:
    """Each job's folder is a TensorBoard run whose HParams session holds the job's own swept values (moved from
    tests/test_cli.py, which ran a 2x2 sweep of the same QUICK runs for it; `dltrain runs` on it: below)."""
    root, _ = six
    for job in NAMES:
        values = hparams_of(root / job)
        assert values["optim.name"] in job and values["sched.name"] in job


def test_a_sweep_prints_one_line_per_job_then_its_table(six) -> None:
    root, result = six
    out = result.stdout
    assert "epoch 1/2" not in out  # the per-epoch lines went to each job's log
    job_lines = [line for line in out.splitlines() if re.match(r"\[\d/6\] ", line)]
    assert len(job_lines) == 6 and {line.split()[1] for line in job_lines} == set(NAMES)
    for line in job_lines:
        assert re.search(r"best val/loss +\d\.\d{4}  test/acc +\d\.\d{4}  completed +\d+\.\ds$", line), line
    table = out[out.index("6 run(s) in sweep by best val/loss, lowest first (*)"):].splitlines()
    header, rows = table[1].split(), table[2:8]
    assert header[:4] == ["optim", "sched", "status", "best"] and "wall_s" in header
    assert rows[0].startswith("*") and not any(row.startswith("*") for row in rows[1:])
    assert out.rstrip().endswith(f"open it: dltrain board {root.name}")
    assert "over trainer.seed" not in out  # no seeds swept: no seed summary (tests/test_seeds_table.py)
    for name in NAMES:
        log = (root / name / "dltrain.log").read_text()
        assert "epoch 1/2" in log and "epoch 2/2" in log and "best val/loss" in log


def start_tensorboard(logdir: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return server, port


def fetch(port: int, path: str, request: dict | None = None) -> object:
    """GET, or POST `request` as the HParams frontend does (JSON body, TensorBoard's XSRF header)."""
    body = None if request is None else json.dumps(request).encode()
    headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"}
    req = urllib.request.Request(f"http://localhost:{port}{path}", data=body, headers=headers)
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


SESSION_GROUPS = {"experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
                  "allowedStatuses": ["STATUS_FAILURE", "STATUS_RUNNING", "STATUS_SUCCESS", "STATUS_UNKNOWN"]}


def natural_order(a: str, b: str) -> int:
    """TensorBoard's tag order (webfiles' compareTagNames): digit runs compare as numbers, a digit or '/' sorts
    before any other character, the rest by character code."""
    i = j = 0
    while True:
        if i == len(a) or j == len(b):
            return (i < len(a)) - (j < len(b))
        if a[i].isdigit() and b[j].isdigit():
            run_a, run_b = re.match(r"\d+", a[i:]).group(), re.match(r"\d+", b[j:]).group()
            if int(run_a) != int(run_b):
                return -1 if int(run_a) < int(run_b) else 1
            i, j = i + len(run_a), j + len(run_b)
            continue
        first_a, first_b = a[i] == "/" or a[i].isdigit(), b[j] == "/" or b[j].isdigit()
        if first_a != first_b:
            return -1 if first_a else 1
        if not first_a and a[i] != b[j]:
            return -1 if a[i] < b[j] else 1
        i, j = i + 1, j + 1


def opened_groups(tags: set[str]) -> list[str]:
    """The tag groups TensorBoard opens on: tags grouped by their first path component in its natural order, the
    first two groups expanded (Time Series' `groups.slice(0, 2)`, Scalars' `_shouldOpen(index <= 2)` after its
    search pane)."""
    from functools import cmp_to_key

    groups = dict.fromkeys(tag.split("/", 1)[0] for tag in sorted(tags, key=cmp_to_key(natural_order)))
    return list(groups)[:2]


def served_sweep(port: int, server: subprocess.Popen, jobs: int) -> list[dict]:
    """The HParams session groups, once TensorBoard has loaded every job's metrics (it loads in the background)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            groups = fetch(port, "/data/plugin/hparams/session_groups", SESSION_GROUPS)["sessionGroups"]
            if len(groups) == jobs and all(len(g["metricValues"]) >= 6 for g in groups):
                return groups
        except OSError:
            pass
        assert time.monotonic() < deadline and server.poll() is None, "TensorBoard did not serve the sweep"
        time.sleep(1)


def test_tensorboard_opens_on_the_curves_of_every_job_and_compares_the_swept_keys(six) -> None:
    root, _ = six
    server, port = start_tensorboard(root)
    try:
        groups = served_sweep(port, server, 6)
        assert sorted(fetch(port, "/data/runs")) == NAMES  # the jobs only: no run '.' (the sweep root) without curves
        tags = fetch(port, "/data/plugin/scalars/tags")
        assert sorted(tags) == NAMES
        assert opened_groups({tag for run_tags in tags.values() for tag in run_tags}) == ["train", "val"]
        for run, run_tags in tags.items():  # one row of cards per opened group; the rest under z_more/, collapsed
            assert {t for t in run_tags if t.startswith("train/")} == {"train/loss", "train/acc"}, run
            assert {t for t in run_tags if t.startswith("val/")} == {"val/loss", "val/acc", "val/loss_best"}, run
            assert {"z_more/lr", "z_more/test/acc", "z_more/time/epoch_sec"} <= set(run_tags), run
            assert all(t.startswith(("train/", "val/", "z_more/")) for t in run_tags), run

        experiment = fetch(port, "/data/plugin/hparams/experiment", {"experimentName": "", "hparamsLimit": 1000})
        infos = experiment["hparamInfos"]
        assert [(h["name"], h.get("differs", False)) for h in infos[:2]] == [("optim.name", True), ("sched.name", True)]
        assert not any(h.get("differs") for h in infos[2:])  # the constant keys follow, not marked
        constant = {h["name"]: h for h in infos[2:]}
        assert {"trainer.max_epochs", "model.hidden", "optim.lr", "data.name"} <= set(constant)
        assert {v for h in infos[:2] for v in h["domainDiscrete"]} == {*OPTIMS, *SCHEDS}
        metrics = [(m["name"]["tag"], m.get("displayName")) for m in experiment["metricInfos"]]
        assert metrics[0] == ("val/loss_best", "best/val/loss")  # the monitored best is the first column
        assert ("z_more/test/acc", "test/acc") in metrics[:5]  # shown by default (the first five columns)

        assert [g["name"] for g in groups] == NAMES  # Trial ID: the job's name, and the rows in its order
        for group in groups:
            (name,) = [s["name"] for s in group["sessions"]]
            assert group["name"] == name == f"optim={group['hparams']['optim.name']},sched={group['hparams']['sched.name']}"
            values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
            report = json.loads((root / name / "metrics.json").read_text())
            assert values["val/loss_best"] == pytest.approx(report["best"], rel=1e-6)
            assert values["z_more/test/acc"] == pytest.approx(report["test"]["test/acc"], rel=1e-6)
            assert values["val/loss"] == pytest.approx(report["final"]["val/loss"], rel=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_runs_fits_the_terminal_and_formats_each_column_one_way(six) -> None:
    root, _ = six
    wide = cli(["runs", "sweep"], cwd=root.parent, env={"COLUMNS": "200"})
    assert wide.returncode == 0, wide.stderr
    lines = wide.stdout.splitlines()
    header = lines[1].split()
    assert header == ["optim", "sched", "status", "best", "best_ep", "test/acc", "test/loss", "val/acc", "val/loss",
                      "train/loss", "epochs", "wall_s", "stopped"]
    rows = [line.lstrip("* ").split() for line in lines[2:]]
    assert len(rows) == 6 and all(len(row) == len(header) + 1 for row in rows)  # "max epochs" is two words
    bests = [float(row[3]) for row in rows]
    assert bests == sorted(bests)
    for column in ("best", "test/acc", "val/loss"):
        assert all(re.fullmatch(r"\d+\.\d{4}", row[header.index(column)]) for row in rows), column
    assert all(re.fullmatch(r"\d+\.\d", row[header.index("wall_s")]) for row in rows)

    narrow = cli(["runs", "sweep"], cwd=root.parent, env={"COLUMNS": "60"})
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert len(lines) == 8 and max(len(line) for line in lines) <= 60  # dropped columns, no wrapped lines
    assert lines[1].split()[:5] == ["optim", "sched", "status", "best", "test/acc"]


def test_runs_at_80_columns_shortens_the_title_instead_of_cutting_it(six, tmp_path) -> None:
    """`dltrain runs` on the newest sweep in Hydra's default folder (multirun/DATE/TIME), in an 80-column terminal."""
    import shutil

    shutil.copytree(six[0], tmp_path / "multirun" / "2026-12-06" / "21-14-14-039915")
    result = cli(["runs"], cwd=tmp_path, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and not any(line.endswith("~") for line in lines), result.stdout
    assert lines[0] == "6 run(s) in .../2026-12-06/21-14-14-039915 by best val/loss, lowest first (*)"


def test_statuses_exit_codes_and_a_rerun_that_adds_a_value(tmp_path) -> None:
    first = cli(["-m", "optim.lr=0.1,1e6", *QUICK, "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr  # a diverged job ran to its end: not a failure
    root = tmp_path / "sweep"
    diverged = (root / "optim.lr=1000000.0" / "metrics.json").read_text()
    json.loads(diverged, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))  # strict JSON: null, not NaN
    assert re.search(r"optim\.lr=1000000\.0 .* diverged ", first.stdout)

    again = cli(["-m", "optim.lr=0.1,1e6,-1", *QUICK, "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert again.returncode == 1  # a rejected job: the sweep carried on, the exit code says so
    assert again.stdout.count("(already finished; skipped)") == 2
    assert re.search(r"optim\.lr=-1 .* failed .*optim\.lr=-1 must be >= 0", again.stdout)
    assert "dltrain: 1 job(s) failed: optim.lr=-1 (error: optim.lr=-1 must be >= 0)" in again.stderr
    failed = json.loads((root / "optim.lr=-1" / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["wall_seconds"] >= 0

    table = runs_table(root)
    status = {line.split()[1 if line.startswith("*") else 0]: line for line in table[2:]}
    assert "completed" in status["0.1"] and "diverged" in status["1000000.0"] and "failed" in status["-1"]
    assert table[2].startswith("*") and " 0.1 " in table[2]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    from dltrain.core.hparams import EXPERIMENT_FILE

    assert not list(root.glob("events.out.tfevents.*"))  # nothing at the root: it would be a run '.' without curves
    for job in ("optim.lr=0.1", "optim.lr=1000000.0"):  # skipped as finished, yet their copies were widened too:
        acc = EventAccumulator(str(root / job / EXPERIMENT_FILE))  # TensorBoard takes whichever it lists first
        acc.Reload()
        content = acc.SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content
        lr = next(h for h in metadata.parse_experiment_plugin_data(content).hparam_infos if h.name == "optim.lr")
        assert lr.differs and sorted(v.number_value for v in lr.domain_discrete.values) == [-1, 0.1, 1e6], job


def test_a_single_run_keeps_its_log_clean_and_records_its_wall_time(tmp_path) -> None:
    result = cli([*QUICK, "optim.lr=1e6", "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # diverged: ran to its end
    run_dir = tmp_path / "run"
    assert not (run_dir / "dltrain.log").exists()  # nothing was logged: no empty log file
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["wall_seconds"] >= report["train_seconds"] > 0
    assert "diverged" in cli(["runs", "run"], cwd=tmp_path).stdout


def test_export_says_what_it_wrote_and_what_it_skipped(tmp_path) -> None:
    assert run([*QUICK], tmp_path / "run")["status"] == "completed"  # the run to export, trained in this process
    result = cli(["export", "run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"torchscript: wrote {Path('run') / 'export' / 'model.ts'}"
    assert lines.pop(1) == f"preprocessing: wrote {Path('run') / 'export' / 'model.preprocessing.json'}"
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:  # the packages to install by name: an editable install of dltrain's extra means nothing to a user
        needs = f"model.onnx needs {' and '.join(missing)} (pip install {' '.join(missing)})"
        assert lines[1:] == [f"onnx: skipped: {needs}"]
    else:
        assert lines[1].startswith("onnx: wrote ")


def test_generate_ends_with_a_newline(tmp_path) -> None:
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    trained = run(["data=text", f"data.path={tmp_path / 'corpus.txt'}", "model=lstm", "model.hidden_size=16",
                   "trainer.max_epochs=1", "trainer.log_every_n_steps=0"], tmp_path / "lm")  # trained in this process:
    assert trained["status"] == "completed", trained  # the run to generate from (`generate` is the CLI under test)
    result = cli(["generate", "lm", "--prompt", "the ", "--length", "30"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("the ") and result.stdout.endswith("\n") and not result.stdout.endswith("\n\n")


def test_a_value_listed_twice_is_a_config_error(tmp_path) -> None:
    result = cli(["-m", "optim=sgd,adam,sgd", *QUICK], cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "dltrain: error: optim lists sgd twice; each value names one job, run once"
    assert not (tmp_path / "multirun").exists()


def test_the_plan_names_jobs_by_the_swept_keys(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plan = sweeps.plan(["optim=sgd,adam", "sched=step,exponential,inverse_time", *QUICK])
    assert plan.swept == {"optim": ["sgd", "adam"], "sched": ["step", "exponential", "inverse_time"]}
    assert plan.jobs == 6 and plan.width == len("optim=adam,sched=inverse_time")
    excluded = next(a for a in plan.hydra_args if a.startswith("hydra.job.config.override_dirname.exclude_keys="))
    assert all(f"'{k}'" in excluded for k in ("trainer.max_epochs", "model.hidden", "trainer.log_every_n_steps"))
    assert "'optim'" not in excluded and "'sched'" not in excluded
    assert str(plan.root).startswith("multirun") and any(a.startswith("hydra.sweep.dir=") for a in plan.hydra_args)
    assert plan.hparams["optim.name"] == {"values": ["sgd", "adam"], "differs": True}
    assert not plan.hparams["optim.lr"]["differs"]  # it changes with optim, but it is not what the command sweeps
    unswept = sweeps.plan(["optim=adam", *QUICK])  # nothing swept: the one job keeps its full, readable name
    assert unswept.swept == {} and not any("exclude_keys" in a for a in unswept.hydra_args)


def test_one_number_format_per_column_and_a_line_per_job() -> None:
    assert numbers([0.5, 0.12346, None, math.nan]) == ["0.5000", "0.1235", "-", "-"]
    assert numbers([0.5, 5e-5]) == ["5.000e-01", "5.000e-05"]  # one outlier: the whole column scientific
    assert numbers([3, None, 12]) == ["3", "-", "12"]
    env = {"jobs": 6, "width": 12, "monitor": "val/loss", "test": "test/acc"}
    done = {"status": "completed", "stop_reason": "non-finite val/loss or train/loss at epoch 2", "monitor": "val/loss",
            "best": 0.25, "test": {"test/loss": 0.3, "test/acc": 0.9}}
    line = sweeps.job_line(1, env, "optim=adam", done, status_of(done), 3.21)
    assert line == "[2/6] optim=adam    best val/loss  0.2500  test/acc  0.9000  diverged     3.2s"
    failed = sweeps.job_line(2, env, "optim=sgd", {"status": "failed", "error": "error: boom"}, "failed", 0.04)
    assert failed == "[3/6] optim=sgd     best val/loss       -  test/acc       -  failed       0.0s  error: boom"


COUNTED = '''
import os
from pathlib import Path

from dltrain import register_data


@register_data("counted")  # no task declared: only the built data would tell
def build_counted(*, seed: int):
    with open(Path(__file__).parent / "builds.txt", "a") as out:
        out.write(f"{os.getpid()}\\n")
    raise RuntimeError("this test only plans the sweep")
'''


def test_the_sweeps_parent_composes_each_point_once_and_builds_no_data(tmp_path, monkeypatch) -> None:
    """The command line is read once; a 2x2 sweep's points are composed once each (the checks, the plan and its
    HParams columns share them), and its metric columns come from the config and the registries: a project's data
    set that declares no task is not built in the sweep's parent."""
    import hydra

    from dltrain.cli.main import front_door, plan_sweep
    from tests.conftest import write_files

    root = write_files(tmp_path / "proj", {
        "conf/project/default.yaml": "# @package _global_\ndefaults:\n  - override /data: counted\n"
                                     "plugins: [counted.py]\n",
        "conf/data/counted.yaml": "name: counted\nbatch_size: 32\n",
        "counted.py": COUNTED,
    })
    monkeypatch.chdir(root)
    composed = []
    real = hydra.compose
    monkeypatch.setattr(hydra, "compose", lambda *a, **k: composed.append(k.get("overrides")) or real(*a, **k))
    line, problem = front_door(["-m", "optim=sgd,adam", "optim.lr=0.1,0.01", "model.hidden=[8]"])
    assert problem is None and line.project == root.resolve()
    sweep = plan_sweep(line)
    assert not (root / "builds.txt").exists(), "the parent built the data"
    assert sweep.swept == {"optim": ["sgd", "adam"], "optim.lr": ["0.1", "0.01"]} and sweep.jobs == 4
    assert sweep.metrics == [["val/loss_best", "best/val/loss"], ["z_more/test/loss", "test/loss"],
                             ["val/loss", "final/val/loss"], ["train/loss", "final/train/loss"]]
    assert len(composed) == 4, composed  # Hydra's config at the first point, then the 3 points (the first, 2 more)
