"""early_stopping.mode=auto (the default) takes the monitored metric's direction from the task: a run monitoring
val/acc keeps its most accurate epoch (it kept the least accurate, the old default min); an explicit mode that
contradicts the task is kept with a warning line; a user's task that declares no direction keeps working, and
auto on one of its metrics is one line asking for the mode."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dltrain.core.registry import ConfigError
from dltrain.core.tasks import build_task, metric_direction, monitor_mode
from tests.conftest import cli, load_scalars

QUICK = ["trainer.max_epochs=4", "model.hidden=[16]", "trainer.log_every_n_steps=0", "optim.lr=0.05"]


@pytest.mark.parametrize("task, metric, direction", [
    ("classification", "val/acc", "max"), ("classification", "train/loss", "min"),
    ("regression", "val/mse", "min"), ("regression", "val/mae", "min"), ("reconstruction", "val/mse", "min"),
    ("language_model", "val/acc", "max"), ("language_model", "val/ppl", "min"), ("adversarial", "val/g_loss", "min"),
])
def test_every_builtin_task_declares_the_direction_of_each_metric_it_logs(task, metric, direction) -> None:
    built = build_task(task)
    for name in ("loss", *built.metric_names, *built.derived_names):
        assert metric_direction(built, f"val/{name}") in ("min", "max"), (task, name)
    assert monitor_mode("auto", metric, built, task) == (direction, None)


def test_an_explicit_mode_is_kept_and_a_contradiction_is_one_warning_line() -> None:
    task = build_task("classification")
    assert monitor_mode("max", "val/acc", task, "classification") == ("max", None)
    mode, warning = monitor_mode("min", "val/acc", task, "classification")
    assert mode == "min" and warning == ("early_stopping.mode=min keeps the epoch with the lowest val/acc, but a "
                                         "higher val/acc is better for task=classification; use "
                                         "early_stopping.mode=max (or auto)")


def test_monitoring_accuracy_keeps_the_most_accurate_epoch(tmp_path) -> None:
    """The trap of issue 17: monitor=val/acc without mode=max restored (and tested) the least accurate epoch."""
    result = cli(["early_stopping.monitor=val/acc", *QUICK, "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    accuracy = [value for _, value in load_scalars(tmp_path / "run")["val/acc"]]
    assert accuracy[-1] > accuracy[0]  # it learns: the first epoch is not the best
    assert report["mode"] == "max" and report["best"] == pytest.approx(max(accuracy), abs=1e-6)
    assert report["best_epoch"] == accuracy.index(max(accuracy)) + 1


def test_a_contradicting_mode_trains_as_asked_after_one_warning_line(tmp_path) -> None:
    result = cli(["early_stopping.monitor=val/acc", "early_stopping.mode=min", *QUICK, "trainer.max_epochs=2",
                  "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == ["dltrain: warning: early_stopping.mode=min keeps the epoch with the lowest val/acc, but a "
                        "higher val/acc is better for task=classification; use early_stopping.mode=max (or auto)"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["mode"] == "min"


USER_TASK = '''
import torch
import torch.nn.functional as F
from dltrain import register_task


class Hinge:
    """A task of the user's that declares no directions (written before tasks had them)."""

    def __init__(self) -> None:
        self.metric_names, self.derived_names = ("margin",), ()

    def step(self, model, x, y):
        logits = model(x).float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        margin = logits.gather(1, y[:, None]).sum() - logits.sum() / logits.shape[1]
        return loss, torch.stack([loss.detach(), margin.detach()])

    def derived(self, means):
        return {}


@register_task("hinge")
def hinge(*, loss=None, label_smoothing=0.0, denoise=0.0):
    return Hinge()
'''


@pytest.fixture(scope="module")
def user_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("taskproj")
    (root / "conf" / "project").mkdir(parents=True)
    (root / "conf" / "project" / "default.yaml").write_text("# @package _global_\nplugins: [tasks.py]\n")
    (root / "tasks.py").write_text(USER_TASK)
    return root


def test_a_user_task_without_directions_keeps_working_on_the_loss(user_project) -> None:
    result = cli(["task=hinge", *QUICK, "trainer.max_epochs=2", "hydra.run.dir=loss"], cwd=user_project)
    assert result.returncode == 0, result.stderr
    assert json.loads((user_project / "loss" / "metrics.json").read_text())["mode"] == "min"


def test_auto_on_a_metric_of_unknown_direction_is_one_line_asking_for_the_mode(user_project) -> None:
    result = cli(["task=hinge", "early_stopping.monitor=val/margin", *QUICK, "hydra.run.dir=auto"], cwd=user_project)
    assert result.returncode == 2
    assert result.stderr.strip() == ("dltrain: error: early_stopping.mode=auto cannot tell whether a higher "
                                     "val/margin is better: task=hinge does not declare its direction; set "
                                     "early_stopping.mode=min or early_stopping.mode=max")
    given = cli(["task=hinge", "early_stopping.monitor=val/margin", "early_stopping.mode=max", *QUICK,
                 "trainer.max_epochs=2", "hydra.run.dir=max"], cwd=user_project)
    assert given.returncode == 0, given.stderr
    assert json.loads((user_project / "max" / "metrics.json").read_text())["mode"] == "max"


def test_a_bad_mode_is_refused_at_the_door() -> None:
    from tests.conftest import parse

    with pytest.raises(ConfigError, match=r"early_stopping.mode='best' is not a choice of early_stopping; valid: "
                                          r"'auto' \| 'min' \| 'max'"):
        parse(["early_stopping.mode=best"])
