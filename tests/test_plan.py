"""`dltrain plan`: what a run or a sweep would do, without training or writing a file. Its numbers are the run's own:
the parameter count of the built model, the steps the engine takes (a dropped last batch included), the learning
rates of the schedule's closed form at its turning points, the monitored metric and its direction; a sweep's jobs
are named as the sweep names their folders, grouped by what a vectorised launcher could stack."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from dltrain.core.engine import LoopSettings
from dltrain.run.assemble import assemble, build
from dltrain.run.lr_curve import sample, turning_points
from dltrain.run.plan_text import describe
from dltrain.run.preview import plan_run
from dltrain.run.stacking import stack_groups
from tests.conftest import cli, compose, parse

SMALL = ["model.hidden=[16]", "trainer.max_epochs=3"]


def test_the_plan_counts_the_built_models_parameters_and_the_engines_steps(tmp_path: Path) -> None:
    # 1,078 digits in batches of 359: three full batches and one of 1, which batch norm cannot train on: dropped
    overrides = ["model=cnn", "model.batch_norm=true", "data.batch_size=359", "trainer.max_epochs=1"]
    config = parse(overrides)
    plan = plan_run(config)
    assert plan.params == sum(p.numel() for p in build(config).model.parameters())
    run = assemble(config, tmp_path, torch.device("cpu"))
    run.fit()  # a real epoch of the engine: the steps it took
    assert plan.steps == run.state.step == 3
    lines = describe(plan)
    text = "\n".join(lines)
    assert f"{plan.params:,} parameters" in text
    assert "3/epoch (1,078 / batch 359, last batch of 1 dropped" in text and "× 1 epochs = 3" in text
    assert max(len(line) for line in lines) <= 110  # long lines wrap after a ' · ' or '; ', indented
    memory = [line for line in lines if line.startswith("memory")][0]
    assert lines[lines.index(memory) + 1].startswith(" " * 13) and "activations" in text


def test_the_learning_rate_at_each_turning_point_is_the_schedules_closed_form() -> None:
    # step with a warm-up of 2 epochs: lr(t) = 0.1 (t+1)/3 for t < 2, then 0.1 * 0.1**i after boundary i (at 2 + b)
    config = parse([*SMALL, "sched=step", "sched.warmup=2", "sched.boundaries=[3,6]", "trainer.max_epochs=10"])
    plan = plan_run(config)
    settings: LoopSettings = plan.settings
    turns = turning_points(settings.lr_at, sample(settings.lr_at, 10, False), config.sched)
    assert [(t.t, t.what) for t in turns] == [(0, "start"), (2, "warm-up end"), (5, "boundary"), (8, "boundary"),
                                             (9, "end")]
    closed = {0: (None, 0.1 * 1 / 3), 2: (0.1 * 2 / 3, 0.1), 5: (0.1, 0.1 * 0.1), 8: (0.1 * 0.1, 0.1 * 0.1**2),
              9: (None, 0.1 * 0.1**2)}
    for turn in turns:
        before, now = closed[turn.t]
        assert turn.lr == pytest.approx(now, rel=1e-12) and (turn.before is None) == (before is None), turn
        if before is not None:
            assert turn.before == pytest.approx(before, rel=1e-12), turn
    text = "\n".join(describe(plan))
    assert "epoch 2 warm-up end 0.06667→0.1" in text and "epoch 5 boundary 0.1→0.01" in text
    assert "epoch 8 boundary 0.01→0.001" in text


def test_a_per_step_schedule_turns_at_optimizer_steps() -> None:
    config = parse([*SMALL, "sched=step", "sched.interval=step", "sched.warmup=5", "sched.boundaries=[20]"])
    plan = plan_run(config)  # 17 steps an epoch (1,078 digits in batches of 64), 3 epochs: 51 steps
    turns = turning_points(plan.settings.lr_at, sample(plan.settings.lr_at, 51, True), config.sched)
    assert [(t.t, t.lr) for t in turns if t.what != "start"] == [(5, 0.1), (25, pytest.approx(0.01)),
                                                                   (50, pytest.approx(0.01))]
    assert "step 25 (epoch 1.47) boundary 0.1→0.01" in "\n".join(describe(plan))


def test_the_plan_says_what_early_stopping_watches_and_which_way_is_better() -> None:
    assert "watches val/loss (lower is better): stops after 5 epochs" in "\n".join(describe(plan_run(parse(SMALL))))
    acc = plan_run(parse([*SMALL, "early_stopping.monitor=val/acc", "early_stopping.patience=2"]))
    assert "watches val/acc (higher is better): stops after 2 epochs" in "\n".join(describe(acc))
    off = plan_run(parse([*SMALL, "early_stopping=none"]))
    assert "off: all 3 epochs run; best epoch by val/loss (lower is better)" in "\n".join(describe(off))


def test_the_optimizer_state_is_measured_adam_two_tensors_per_parameter() -> None:
    adam = plan_run(parse([*SMALL, "optim=adam"]))
    floats = sum(p.numel() for p in adam.parts.model.parameters())
    steps = 4 * len(list(adam.parts.model.parameters()))  # Adam's step counter: one float32 scalar per parameter
    assert adam.measured.optimizer_bytes == 4 * (2 * floats) + steps
    assert plan_run(parse(SMALL)).measured.optimizer_bytes == 0  # plain SGD keeps no state
    assert adam.measured.activation_bytes > 0 and adam.measured.step_seconds > 0


def test_stack_groups_follow_the_per_member_rule() -> None:
    base = ["model.hidden=[16]"]
    same = [compose(base), compose([*base, "optim.lr=0.5", "trainer.seed=3", "sched=cosine", "reg=l2",
                                    "model.dropout=0.2", "trainer.max_epochs=7", "optim.weight_decay=0.1"])]
    apart = [compose([*base, "data.batch_size=32"]), compose([*base, "optim=adam"]), compose(["model.hidden=[8]"]),
             compose([*base, "optim.exclude_bias_and_norm=true"]), compose([*base, "trainer.precision=bf16"])]
    assert stack_groups(same + apart) == [[0, 1], [2], [3], [4], [5], [6]]


def test_dltrain_plan_prints_the_default_run_and_writes_nothing(tmp_path: Path) -> None:
    result = cli(["plan"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    params = sum(p.numel() for p in build(parse([])).model.parameters())
    out = result.stdout
    assert f"mlp: {params:,} parameters" in out and "17/epoch" in out and "× 20 epochs = 340" in out
    assert "watches val/loss (lower is better)" in out and "ESTIMATE from 5 timed steps" in out
    assert "device     cpu · 1 thread" in out or "device     cuda" in out
    assert list(tmp_path.iterdir()) == []  # no outputs/, no file at all


def test_a_sweep_plan_names_the_jobs_as_the_sweep_does_and_groups_them(tmp_path: Path) -> None:
    args = ["-m", "optim.lr=0.01,0.1", "model=mlp,cnn", "trainer.max_epochs=1", "trainer.log_every_n_steps=0"]
    planned = cli(["plan", *args], cwd=tmp_path, timeout=120)
    assert planned.returncode == 0, planned.stderr
    assert list(tmp_path.iterdir()) == []
    listed = [line.split()[1] for line in planned.stdout.splitlines() if line.startswith("  [")]
    assert listed == ["model=mlp,optim.lr=0.01", "model=cnn,optim.lr=0.01", "model=mlp,optim.lr=0.1",
                      "model=cnn,optim.lr=0.1"]  # Hydra's order: the product of the overrides as given
    assert "would stack: 2 group(s)" in planned.stdout and "with hydra/launcher=vectorized; this sweep's launcher " \
        "trains each job on its own" in planned.stdout
    assert "  group 1: stacking jobs 1, 3 (2 members), each ~" in planned.stdout
    assert "  group 2: stacking jobs 2, 4 (2 members), each ~" in planned.stdout
    assert "total ~" in planned.stdout
    ran = cli([*args, "hydra.sweep.dir=sweep"], cwd=tmp_path, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == sorted(listed)


def test_a_bad_override_is_the_runs_one_line_and_a_failing_job_is_shown(tmp_path: Path) -> None:
    planned, ran = (cli([*first, "model=cnnn"], cwd=tmp_path, timeout=60) for first in (["plan"], []))
    assert planned.returncode == ran.returncode == 2
    assert planned.stderr == ran.stderr and planned.stderr.count("\n") == 1
    assert planned.stderr.startswith("dltrain: error: unknown model 'cnnn'")
    door = cli(["plan", "optim.lr=-1"], cwd=tmp_path, timeout=60)
    assert (door.returncode, door.stderr) == (2, "dltrain: error: optim.lr=-1 must be >= 0\n")
    sweep = cli(["plan", "-m", "optim.lr=0.1,-1", *SMALL], cwd=tmp_path, timeout=60)
    assert sweep.returncode == 2 and re.search(r"\[2/2\] optim\.lr=-1 +would fail: optim\.lr=-1 must be >= 0$",
                                               sweep.stdout, re.M)
    assert list(tmp_path.iterdir()) == []


def test_a_projects_plan_uses_its_own_configs_and_plugins(tmp_path: Path) -> None:
    assert cli(["init", "myproj"], cwd=tmp_path).returncode == 0
    project = tmp_path / "myproj"

    def files() -> list[Path]:  # Python's own bytecode cache of the imported plugins aside
        return sorted(p.relative_to(project) for p in project.rglob("*") if "__pycache__" not in p.parts)

    before = files()
    result = cli(["plan", "model.width=8"], cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "model      mynet: " in result.stdout and files() == before
