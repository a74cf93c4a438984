"""Bad input, in-process, at the layer that catches it: Hydra's composition (the CLI's up-front check of
choices and keys), `RunConfig.parse` (the door: every value that needs no data, the monitor among the task's metrics),
`build` (the checks that need the data: does the model fit it) and the start of a run (resume, DDP). Each case is the one line a user sees; `test_cli.py` runs a few of them through the real command for
the exit code, the single line on stderr and the absent run folder."""
from __future__ import annotations

import re

import pytest

from dltrain.core.registry import ConfigError
from dltrain.run import overrides as cli  # the up-front checks of the command line
from dltrain.run.assemble import build
from tests.conftest import parse, run


@pytest.mark.parametrize("args, message", [
    (["model=transformer"], "unknown model 'transformer'; valid: "),
    (["optim=sgd", "optim.momentum=0.9"], "optim.momentum is not an option of optim=sgd; valid: lr, weight_decay"),
    (["model.init_args={mean:0.0}"], "To append to your config use +model.init_args={mean:0.0}"),
])
def test_an_unknown_choice_or_key_is_one_line_before_anything_runs(args: list[str], message: str) -> None:
    problem = cli.check_overrides(args)
    assert problem is not None and message in problem and "\n" not in problem


@pytest.mark.parametrize("args, message", [
    (["optim=sgd,foo"], "unknown optim 'foo'; valid: adadelta, adagrad, adam"),
    (["optim=sgd,adam", "optim.momentum=0.9"], "optim.momentum is not an option of optim=sgd"),
])
def test_a_sweep_checks_every_swept_choice_before_any_job(args: list[str], message: str) -> None:
    problem = cli.check_sweep(args)
    assert problem is not None and message in problem and "\n" not in problem


def test_a_bare_word_is_neither_a_subcommand_nor_an_override() -> None:
    problem = cli.stray_word(["bord"])
    subcommands = ", ".join(cli.SUBCOMMANDS)  # board, runs, eval, export, generate, ...
    assert problem is not None and problem.startswith(
        f"'bord' is neither a sub-command ({subcommands}) nor an override KEY=VALUE")
    assert cli.stray_word(["model=cnn", "~reg"]) is None  # overrides and deletions are not stray words


@pytest.mark.parametrize("args, message", [
    (["optim.lr=-0.1"], "optim.lr=-0.1 must be >= 0"),
    (["optim.lr=fast"], "optim.lr='fast' has the wrong type for optim=sgd: expected float"),
    (["early_stopping.patience=-1"], "early_stopping.patience=-1 must be >= 0"),
    (["sched=step", "sched.values=[0.1,0.01]"], "needs len(boundaries) + 1 = 3"),
    (["sched=exponential", "sched.decay_steps=0"], "sched.decay_steps=0 must be > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be >= 1"),
    (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
    (["+data.augment.flp=true"], "data.augment.flp is not an option of data.augment; valid: crop_padding"),
    (["~model"], "the config has no model group; choose one (model=NAME"),
    (["denoise=abc"], "denoise='abc' has the wrong type: expected int or float"),
    (["trainer.device=tpu"], "trainer.device='tpu' is not a choice of trainer; valid: 'auto' | 'cpu' | 'cuda'"),
    (["model.dropout=1.0"], "model.dropout=1.0 must be in [0, 1)"),
    (["early_stopping.monitor=val/f1"], "early_stopping.monitor=val/f1 is not a metric of this run (task=classific"),
    (["model.hidden=[]"], "model.hidden=[] must list at least one value"),
    (["data=diabetes", "label_smoothing=0.1"], "label_smoothing=0.1 applies to task=classification only"),
])
def test_a_bad_value_is_one_line_at_the_door(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        parse(args)
    assert len(err.value.problems) == 1 and "\n" not in err.value.problems[0]


@pytest.mark.parametrize("args, message", [
    (["model=cnn", "data=synthetic", "data.shape=[64]"], "model=cnn needs image inputs"),
    (["model=cnn", "model.channels=[6,16,32,64]", "model.padding=0"], "shrinks to nothing"),
    (["data=synthetic", "data.val_size=0"], "the validation split is empty"),
    (["model=gan"], "model=gan with task=classification cannot take the data's samples of shape (1, 8, 8) "
                    "(model=gan trains with task=adversarial)"),
])
def test_a_config_that_does_not_fit_its_data_is_one_line_at_build(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        build(parse(args))
    assert len(err.value.problems) == 1 and "\n" not in err.value.problems[0]


@pytest.mark.parametrize("args, message", [
    (["trainer.resume=nowhere"], "no checkpoint at nowhere"),
    (["trainer.devices=2", "data.batch_size=1"], "data.batch_size=1 is smaller than trainer.devices=2"),
])
def test_a_run_that_cannot_start_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args: list[str],
                                                                message: str) -> None:
    """Checked by the run itself (the checkpoint to resume; the DDP checks in the parent, before any worker)."""
    monkeypatch.chdir(tmp_path)  # `nowhere` is relative to the working directory
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        run(args, tmp_path / "run")
    assert len(err.value.problems) == 1 and "\n" not in err.value.problems[0]
    assert list((tmp_path / "run").iterdir()) == []  # no config.yaml, metrics.json, checkpoint or event file
