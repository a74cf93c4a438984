"""The door: every mistake a config can show without data is one line at once, before any data is built or model
constructed (dltrain/rules.py, dltrain/door.py); command lines Hydra would misread, or run silently wrong, are one
line before Hydra starts (dltrain/overrides.py); a user's builder that returns the wrong thing or exits is one line
naming it. Through the real command where a user meets it; the many values of one rule in-process."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dltrain.core.registry import ConfigError
from tests.conftest import cli, compose, parse, write_files


def one_line_errors(result, code: int = 2) -> list[str]:
    """The stderr lines of a refused command: each one `dltrain: error: ...`, no traceback."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("dltrain: error: ") for line in lines), result.stderr
    return [line.removeprefix("dltrain: error: ") for line in lines]


def test_the_issues_three_mistakes_are_three_lines(tmp_path) -> None:
    errors = one_line_errors(cli(["optim.lr=-1", "model.dropout=1.5", "early_stopping.patience=-3"], cwd=tmp_path))
    assert sorted(errors) == ["early_stopping.patience=-3 must be >= 0", "model.dropout=1.5 must be in [0, 1)",
                              "optim.lr=-1 must be >= 0"]
    assert not list(tmp_path.rglob("*.pt"))


def test_sizes_and_strides_of_a_cnn_are_checked_at_the_door(tmp_path) -> None:
    """kernel_size=0 was oneDNN's 'could not create a primitive descriptor'; the others trained or crashed later."""
    errors = one_line_errors(cli(["model=cnn", "model.kernel_size=0", "model.stride=0", "model.pool_size=0",
                                  "model.head=[-1]"], cwd=tmp_path))
    assert sorted(errors) == ["model.head=[-1] must hold numbers > 0", "model.kernel_size=0 must be > 0",
                              "model.pool_size=0 must be > 0", "model.stride=0 must be > 0"]


@pytest.mark.parametrize("args, message", [
    (["model=cnn", "model.kernel_size=-3"], "model.kernel_size=-3 must be > 0"),
    (["model=cnn", "model.head=[0]"], "model.head=[0] must hold numbers > 0"),
    (["model=cnn", "model.conv_dropout=1.0"], "model.conv_dropout=1.0 must be in [0, 1)"),
    (["model=rnn", "model.num_layers=0"], "model.num_layers=0 must be > 0"),
    (["model=lstm", "model.embed_dim=-1"], "model.embed_dim=-1 must be > 0"),
    (["model=gru", "model.dropout=-0.1"], "model.dropout=-0.1 must be in [0, 1)"),
    (["model=gan", "model.g_hidden=[0]"], "model.g_hidden=[0] must hold numbers > 0"),
    (["model=gan", "model.latent_dim=0"], "model.latent_dim=0 must be > 0"),
    (["model=autoencoder", "model.bottleneck=-2"], "model.bottleneck=-2 must be > 0"),
    (["model=autoencoder", "model.channels=[]"], "model.channels=[] must list at least one value"),
    (["model=resnet", "model.layers=[2,2]"], "model.layers=[2, 2] and model.widths=[64, 128, 256, 512] must be of the"),
    (["model.activation=relu6"], "model.activation='relu6' is not an activation; valid: sigmoid, tanh, relu"),
    (["model.init=he"], "model.init='he' is not an init scheme; valid: default, normal"),
    (["data=synthetic", "data.shape=[8,0]"], "data.shape=[8, 0] must hold numbers > 0"),
    (["data=synthetic", "data.num_classes=1"], "data.num_classes=1 must be >= 2"),
    (["data=sine", "data.min_period=64"], "data.min_period=64 must be <= data.max_period=32.0"),
    (["data=adding", "data.train_size=0"], "data.train_size=0 must be > 0"),
    (["data.fractions=[0.9,0.2,0.1]"], "data.fractions=[0.9, 0.2, 0.1] must be three train/val/test fractions"),
    (["data=image_folder", "data.size=[32]"], "data.size=[32] must list exactly 2 values"),
    (["data=csv", "data.delimiter=';;'"], "data.delimiter=';;' must be one character"),
    (["data=diabetes", "early_stopping.monitor=val/acc"], "early_stopping.monitor=val/acc is not a metric of this "
                                                          "run (task=regression); valid: train/loss, train/mse"),
    (["data=csv", "early_stopping.monitor=val/accuracy"], "early_stopping.monitor=val/accuracy is not a metric of "
                                                          "any task; valid: "),
    (["data=text", "data.path=c.txt", "loss=bce"], "loss=bce does not fit task=language_model"),
    (["model.init=normal", "+model.init_args={std:-1}"], "model.init_args={'std': -1} do not fit init=normal: normal "
                                                         "expects std >= 0.0, but found std -1"),
    (["early_stopping.patience=abc"], "early_stopping.patience='abc' has the wrong type for early_stopping: expected "
                                      "int"),  # was a TypeError traceback: the class's __init__ hints were not read
])
def test_a_value_rule_of_a_model_or_data_option_is_one_line_at_the_door(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(args)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(message), err.value.problems


def test_every_choice_is_still_valid_under_the_rules() -> None:
    from dltrain.core.conf_dirs import groups
    from dltrain.run.config import RunConfig

    for group in ("model", "data"):
        for choice in groups()[group]:
            RunConfig.parse(compose([f"{group}={choice}", *(["data.path=c.txt"] if choice == "text" else [])]))


def test_a_csv_is_checked_at_the_door_with_the_other_mistakes(tmp_path) -> None:
    """Reading the header line only: a wrong target column, a relative path that is not there (and where it was
    looked for) and a bad value of another group, all at once."""
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    errors = one_line_errors(cli(["data=csv", "data.path=t.csv", "data.target=lable", "data.val_path=v.csv",
                                  "optim.lr=-1"], cwd=tmp_path))
    assert sorted(errors) == sorted([
        "optim.lr=-1 must be >= 0",
        f"data.val_path=v.csv is not a file (looked in {tmp_path}, the working folder); give a CSV file",
        f"data.target=lable is not a column of {Path('t.csv')}; columns: a, b, label"])


@pytest.mark.parametrize("key, value, message", [
    ("data=arrays data.path", "x.npy", "data.path=x.npy is not a file (looked in {cwd}, the working folder)"),
    ("data=text data.path", "corpus.txt", "data.path=corpus.txt is not a file (looked in {cwd}, the working folder)"),
    ("data=image_folder data.root", "pics", "data.root=pics is not a folder (looked in {cwd}, the working folder)"),
])
def test_a_relative_path_that_is_not_there_says_where_it_was_looked_for(tmp_path, monkeypatch, key, value,
                                                                          message) -> None:
    from dltrain.run.config import RunConfig

    monkeypatch.chdir(tmp_path)
    group, option = key.split()
    with pytest.raises(ConfigError) as err:
        RunConfig.parse(compose([group, f"{option}={value}"]), inputs=True)
    assert err.value.problems == [p for p in err.value.problems if "\n" not in p]
    assert err.value.problems[0].startswith(message.format(cwd=tmp_path)), err.value.problems
    RunConfig.parse(compose([group, f"{option}={value}"]))  # a saved run is evaluated without its training files


def test_an_npy_whose_header_lies_about_its_size_says_so(tmp_path) -> None:
    """It was 'does not fit in memory; set data.mmap_threshold_mb', a training option that cannot help."""
    np.save(tmp_path / "x.npy", np.zeros((10, 4), np.float32))
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    (tmp_path / "x.npy").write_bytes(lying_header((tmp_path / "x.npy").read_bytes()))
    errors = one_line_errors(cli(["data=arrays", "data.path=x.npy", "data.y_path=y.npy"], cwd=tmp_path))
    assert len(errors) == 1 and re.match(r"x\.npy is not a valid \.npy file or is truncated: its header declares an "
                                         r"array \(9999999999, 4\) of float32 \(159999999984 bytes\) but it holds "
                                         r"160 bytes of data; write it again with np.save", errors[0]), errors


def lying_header(raw: bytes) -> bytes:
    """The same file, its header claiming 9999999999 rows (the header keeps its length: numpy pads it)."""
    end = raw.index(b"\n") + 1
    header = raw[10:end].replace(b"(10, 4)", b"(9999999999, 4)")
    header = header.rstrip(b"\n").rstrip(b" ")
    header = header + b" " * (end - 10 - len(header) - 1) + b"\n"
    assert len(header) == end - 10
    return raw[:10] + header + raw[end:]


@pytest.mark.parametrize("args, message", [
    (["optim.lr=${nope}"], "optim.lr: its ${...} interpolation cannot be resolved (Interpolation key 'nope' not found)"),
    (["optim.lr=${optim.lr}"], "optim.lr: its ${...} interpolation cannot be resolved (Recursive interpolation"),
    (["optim.lr=${oc.nope:1}"], "optim.lr: its ${...} interpolation cannot be resolved (Unsupported interpolation "
                                "type oc.nope)"),
    (["-m", "optim.lr=0.1,${nope}"], "optim.lr: its ${...} interpolation cannot be resolved"),
    (["-m", "optim.lr=interval(0.001,0.1)"], "optim.lr=interval(0.001,0.1): an interval is searched by a sweeper that "
                                             "picks values from it; add hydra/sweeper=optuna"),
    (["-m", "optim.lr=glob(*)"], "optim.lr=glob(*): glob() picks among a config group's choices"),
    (["-m", "optim=glob(x*)"], "optim=glob(x*) matches none of optim's choices: adadelta, adagrad, adam"),
    (["-m", "trainer.seed=range(5,0,1)"], "trainer.seed=range(5,0,1) gives no values, so the sweep would run nothing"),
    (["-m", "optim.lr=0.1,0.2", "optim.lr=0.3"], "optim.lr is given twice (optim.lr=0.1,0.2 and optim.lr=0.3): Hydra "
                                                 "would keep only the last; give it once, with every value, e.g. "
                                                 "optim.lr=0.1,0.2,0.3"),
    (["-m", "optim.lr=0.1,0.2", "hydra.sweep.dir="], "hydra.sweep.dir is empty: the run's files would be scattered"),
    (["hydra.run.dir="], "hydra.run.dir is empty: the run's files would be scattered in the working folder"),
    (["--config-dir", "nowhere"], "--config-dir nowhere is not there (looked in {cwd}, the working folder); give "
                                  "your project's conf/ folder"),
    (["--config-dir", "c.txt"], "--config-dir c.txt is a file, not a folder; give your project's conf/ folder"),
    (["--config-dir", ""], "--config-dir is empty; give your project's conf/ folder"),
    (["trainer.seed=" + "9" * 400], "trainer.seed=999999... (400 digits) is too large for float32 training"),
])
def test_command_lines_that_crashed_or_ran_silently_wrong_are_one_line(tmp_path, args, message) -> None:
    (tmp_path / "c.txt").write_text("not a folder")
    errors = one_line_errors(cli(args, cwd=tmp_path))
    assert len(errors) == 1 and errors[0].startswith(message.replace("{cwd}", str(tmp_path))), errors
    assert not list(tmp_path.rglob(".hydra")) and not list(tmp_path.rglob("*.json"))  # nothing ran


def test_an_interpolation_only_a_job_can_resolve_is_left_to_the_job() -> None:
    from dltrain.run.overrides import check_overrides

    assert check_overrides(["trainer.resume=${hydra:runtime.output_dir}"]) is None  # HydraConfig exists in the job
    assert check_overrides(["trainer.seed=${oc.env:DLTRAIN_NO_SUCH_VARIABLE,3}"]) is None  # a default is fine


def test_a_glob_over_a_groups_choices_sweeps_them(tmp_path) -> None:
    """Hydra's own expansion needs its config loader: the up-front check said 'ConfigLoader is not set'."""
    result = cli(["-m", "optim=glob(adam*)", "trainer.max_epochs=1", "model.hidden=[8]", "data.fractions=[0.2,0.1,0.1]",
                  "trainer.log_every_n_steps=0", "hydra.sweep.dir=s"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.parent.name for p in (tmp_path / "s").rglob("metrics.json")) == ["optim=adam", "optim=adamw"]


def test_resuming_from_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path) -> None:
    """It was '(KeyError: 101)': torch reading a text file as its legacy format."""
    (tmp_path / "notes.txt").write_text("epoch 3 was good\n")
    errors = one_line_errors(cli(["trainer.resume=notes.txt"], cwd=tmp_path))
    assert len(errors) == 1 and errors[0].startswith("notes.txt is not a readable dltrain checkpoint: it is not a file "
                                                     "that torch.save wrote"), errors
    assert errors[0].endswith("give a run folder that holds last.pt, or its last.pt or best.pt")


PROJECT = {
    "probe.py": '''
from pathlib import Path
from typing import Annotated

import torch
from torch import nn

from dltrain import DataBundle, Split, register_data, register_model
from dltrain.core.rules import Positive


@register_data("probe", task="classification")
def build_data(*, seed: int, bundle: bool = True):
    Path("data-was-built").write_text("the door let a mistake through")
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(seed))
    y = (x[:, 0] > 0).long()
    if not bundle:
        return {"x": x, "y": y}
    return DataBundle(Split(x[:24], y[:24]), Split(x[24:32], y[24:32]), Split(x[32:], y[32:]), num_outputs=2)


@register_model("probe_net")
def build_model(*, in_shape, num_outputs, width: Annotated[int, Positive] = 8, module: bool = True):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, width), nn.ReLU(), nn.Linear(width, num_outputs))
    return net if module else net.state_dict()
''',
    "conf/data/probe.yaml": "name: probe\nbatch_size: 8   # samples per step\n",
    "conf/model/probe_net.yaml": "name: probe_net\nwidth: 8   # hidden units\n",
    "conf/model/linked.yaml": "name: probe_net\nwidth: ${model.depth}   # a key that does not exist\n",
    "conf/project/default.yaml": "# @package _global_\nplugins: [probe.py]\ndefaults:\n  - override /data: probe\n"
                                 "  - override /model: probe_net\n",
}


@pytest.fixture
def project(tmp_path) -> Path:
    return write_files(tmp_path, PROJECT)


def test_a_users_builder_declares_its_rules_and_every_mistake_comes_before_its_data(project) -> None:
    errors = one_line_errors(cli(["model.width=0", "optim.lr=-1", "early_stopping.monitor=val/accuracy"],
                                 cwd=project))
    assert sorted(errors) == ["early_stopping.monitor=val/accuracy is not a metric of this run (task=classification);"
                              " valid: train/loss, train/acc, val/loss, val/acc", "model.width=0 must be > 0",
                              "optim.lr=-1 must be >= 0"]
    assert not (project / "data-was-built").exists()
    linked = one_line_errors(cli(["model=linked"], cwd=project))  # an interpolation in the user's YAML
    assert linked == ["model.width: its ${...} interpolation cannot be resolved (Interpolation key 'model.depth' not "
                      "found); it must name another existing setting (not itself), or a resolver OmegaConf knows "
                      "(e.g. ${oc.env:NAME,default})"]


@pytest.mark.parametrize("args, message", [
    (["+data.bundle=false"], "data=probe: your builder build_data ({probe}:12) returned dict, not a dltrain.DataBundle"),
    (["+model.module=false"], "model=probe_net: your builder build_model ({probe}:22) returned OrderedDict, not a "
                             "torch.nn.Module"),
])
def test_a_user_builder_that_returns_the_wrong_thing_is_one_line_naming_it(project, args, message) -> None:
    errors = one_line_errors(cli(args, cwd=project))
    assert errors == [message.format(probe=project / "probe.py")]


def test_a_plugin_that_exits_is_one_line_not_a_silent_success(project) -> None:
    (project / "probe.py").write_text("import sys\nsys.exit(0)\n")
    errors = one_line_errors(cli(["trainer.max_epochs=1"], cwd=project))
    assert len(errors) == 1 and errors[0].startswith(f"plugin {project / 'probe.py'} called sys.exit(0) while "
                                                     "importing"), errors


def caught_signals(pid: int) -> int:
    """The signals process `pid` has handlers for (the SigCgt mask of /proc/PID/status), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl_c", "sigterm"])
@pytest.mark.parametrize("delay", [0.25, 0.5])
def test_a_signal_early_in_start_up_is_one_line_and_its_exit_code(tmp_path, sig: int, code: int, delay: float) -> None:
    """Timed from the moment Python's own SIGINT handler exists (the interpreter is up): Ctrl-C there was a
    KeyboardInterrupt traceback from an import, SIGTERM a silent exit -15."""
    exe = Path(sys.executable).parent / "dltrain"
    proc = subprocess.Popen([str(exe), "trainer.max_epochs=500", "hydra.run.dir=run"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 30
    while not caught_signals(proc.pid) & (1 << (signal.SIGINT - 1)) and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(delay)
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)  # Ctrl-C hits the whole group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltrain: interrupted"), err


@pytest.mark.parametrize("where, message", [
    ("afile/run", "hydra.run.dir=afile/run: afile is a file, not a folder; give hydra.run.dir=A_FOLDER"),
    ("locked/run", "hydra.run.dir=locked/run: cannot write in {tmp}/locked (Operation not permitted); make it "
                   "writable, or give a folder you can write, e.g. hydra.run.dir=~/dltrain-runs/run1"),
])
def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, where: str, message: str) -> None:
    """Hydra's own report was a traceback (NotADirectoryError, PermissionError)."""
    (tmp_path / "afile").write_text("in the way")
    (tmp_path / "locked").mkdir()
    if where.startswith("locked") and subprocess.run(["chattr", "+i", str(tmp_path / "locked")],
                                                     capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system that supports it (as root, permissions prove nothing)")
    try:
        errors = one_line_errors(cli([f"hydra.run.dir={where}"], cwd=tmp_path))
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "locked")], capture_output=True)
    assert errors == [message.replace("{tmp}", str(tmp_path))]
