"""A user's own optimizer and schedule (docs/extending.md's worked example, its files taken from the doc as
written) in a real `dltrain init` project: they train, the run's learning rate is the user schedule's, the
user optimizer steps with that rate and with each ParamGroup's lr_scale, a bad option is one line, and a run of
them resumes bit-exactly. And the import paths that the docs, the README and the starter name keep working,
from an init project and from an installed wheel."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dltrain.core import checkpoint
from tests.conftest import REPO, cli, load_scalars, write_files

DOC = REPO / "docs" / "extending.md"
QUICK = ["trainer.log_every_n_steps=0", "early_stopping=none"]


def doc_files() -> dict[str, str]:
    """The files of the doc's worked example: fenced blocks whose first line is `# PATH` (a .py or .yaml)."""
    blocks = re.findall(r"```(?:python|yaml)\n# ([\w/]+\.(?:py|yaml))\n(.*?)```", DOC.read_text(), flags=re.S)
    return {path: text for path, text in blocks}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dltrain init myproj`, plus the doc's lion.py, rsqrt.py and their YAMLs, named in the project's plugins."""
    root = tmp_path_factory.mktemp("ext") / "myproj"
    made = cli(["init", str(root)], cwd=root.parent)
    assert made.returncode == 0, made.stderr
    files = doc_files()
    assert sorted(files) == ["conf/optim/lion.yaml", "conf/sched/rsqrt.yaml", "lion.py", "rsqrt.py"]
    write_files(root, files)
    default = root / "conf" / "project" / "default.yaml"
    text = default.read_text()
    assert "plugins: [models.py, data.py]" in text  # the line the doc tells the user to extend
    plugins = "plugins: [models.py, data.py, lion.py, rsqrt.py]"
    default.write_text(text.replace("plugins: [models.py, data.py]", plugins))
    return root


def test_a_user_optimizer_and_schedule_train_with_the_schedules_rate_and_resume_bit_exactly(project) -> None:
    lr0 = 0.003  # t counts epochs here, so the rate is logged at each epoch's start: 1/2 warm-up, then rsqrt
    args = ["optim=lion", f"optim.lr={lr0}", "sched=rsqrt", "sched.interval=epoch", "sched.warmup=1",
            "sched.timescale=1", *QUICK]
    straight = cli([*args, "trainer.max_epochs=4", "hydra.run.dir=straight"], cwd=project)
    assert straight.returncode == 0, straight.stderr
    expected = [lr0 / 2, lr0, lr0 / math.sqrt(2), lr0 / math.sqrt(3)]  # lr(t) for epochs t = 0..3
    logged = [value for _, value in load_scalars(project / "straight")["z_more/lr"]]
    assert logged == pytest.approx(expected, rel=1e-6)
    saved = checkpoint.load(project / "straight" / "last.pt")
    assert [g["lr"] for g in saved["optimizer"]["param_groups"]] == pytest.approx([expected[-1]])  # what Lion read
    assert set(saved["optimizer"]["state"][0]) == {"exp_avg"}  # Lion's own state: the user's class stepped
    cut = cli([*args, "trainer.max_epochs=2", "hydra.run.dir=cut"], cwd=project)
    resumed = cli([*args, "trainer.max_epochs=4", "trainer.resume=cut"], cwd=project)
    assert cut.returncode == 0 and resumed.returncode == 0, resumed.stderr
    again = checkpoint.load(project / "cut" / "last.pt")
    assert again["epoch"] == 4
    for key, weights in saved["model"].items():
        assert torch.equal(weights, again["model"][key]), key
    other = cli(["optim=adam", "trainer.max_epochs=5", "trainer.resume=cut"], cwd=project)  # Lion's state as Adam's
    assert other.returncode == 2 and other.stderr.strip() == ("dltrain: error: the checkpoint was trained with "
                                                              "optim=lion (Lion), which cannot continue as Adam; "
                                                              "resume with optim=lion"), other.stderr


def test_the_user_optimizer_steps_with_the_rate_the_schedule_sets(project) -> None:
    """A built-in schedule that drops the rate to 0 after one epoch: Lion's second epoch leaves the weights as
    they were (each step moves a weight by lr), so the rate Lion used is the one dltrain set in its groups."""
    args = ["optim=lion", "sched=step", "sched.boundaries=[1]", "sched.values=[0.003,0.0]", *QUICK]
    one = cli([*args, "trainer.max_epochs=1", "hydra.run.dir=one"], cwd=project)
    two = cli([*args, "trainer.max_epochs=2", "hydra.run.dir=two"], cwd=project)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    first, second = (checkpoint.load(project / d / "last.pt")["model"] for d in ("one", "two"))
    for key in first:
        assert torch.equal(first[key], second[key]), key
    fresh = cli([*QUICK, "optim=lion", "trainer.max_epochs=2", "hydra.run.dir=moving"], cwd=project)
    assert fresh.returncode == 0, fresh.stderr  # the rate never drops: the second epoch moves the weights
    moving = checkpoint.load(project / "moving" / "last.pt")["model"]
    assert any(not torch.equal(first[key], moving[key]) for key in first)


def test_each_param_groups_lr_scale_reaches_a_user_optimizer(project) -> None:
    """The GAN's two nets are two ParamGroups: the discriminator's group steps at d_lr_scale times the rate."""
    result = cli(["model=gan", "data=digits", "task=adversarial", "optim=lion", "optim.lr=0.0005",
                  "model.d_lr_scale=0.5", "optim.exclude_bias_and_norm=true", "trainer.max_epochs=1",
                  "hydra.run.dir=gan", *QUICK], cwd=project)
    assert result.returncode == 0, result.stderr
    groups = checkpoint.load(project / "gan" / "last.pt")["optimizer"]["param_groups"]
    # generator (weights, then 1-D params), discriminator (weights, then 1-D params)
    assert [g["lr"] for g in groups] == pytest.approx([0.0005, 0.0005, 0.00025, 0.00025])
    assert [g["weight_decay"] for g in groups] == [0.0] * 4  # the YAML's 0.0; the 1-D halves say 0.0 themselves


def test_bad_options_of_a_user_optimizer_and_schedule_are_one_line_each(project) -> None:
    one = cli(["optim=lion", "optim.betas=[0.9,1.5]", "trainer.max_epochs=1"], cwd=project)
    assert one.returncode == 2, one.stderr
    assert one.stderr.strip() == "dltrain: error: optim.betas=[0.9, 1.5] must hold numbers in [0, 1)"
    three = cli(["optim=lion", "+optim.momentum=0.9", "optim.lr=-1", "sched=rsqrt", "sched.timescale=0"], cwd=project)
    assert three.returncode == 2 and three.stderr.strip().splitlines() == [
        "dltrain: error: optim.momentum is not an option of optim=lion; valid: lr, betas, weight_decay, "
        "exclude_bias_and_norm", "dltrain: error: optim.lr=-1 must be >= 0",
        "dltrain: error: sched.timescale=0 must be > 0"], three.stderr  # each bad option: one line


# Import paths a user's code may name: the docs', the README's and the starter's (found in their text below),
# and these, which they name in prose or which dltrain named before its modules moved into core/, run/, ...
NAMED = ["from dltrain.dist import is_main", "from dltrain.data import scaled_splits",
         "from dltrain.models import MODELS", "from dltrain.rules import Positive", "from dltrain.plugins import load",
         "from dltrain import register_optimizer, register_schedule, register_model, register_data",
         "from dltrain import register_task, register_callback, ParamGroup, Callback, DataBundle, Split"]
NOT_A_MODULE = {"dltrain.log"}  # a file name the README mentions


def documented_imports() -> tuple[list[str], list[str]]:
    """The `from dltrain... import ...` lines and the `dltrain.a.b` names of the README, docs/ and the starter."""
    texts = [p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md"),
                                     *(REPO / "dltrain" / "starter").rglob("*")] if p.is_file()]
    lines = {line for text in texts for line in re.findall(r"^\s*(from dltrain[\w.]* import [\w, ]+)", text, re.M)}
    names = {name for text in texts for name in re.findall(r"`(dltrain(?:\.\w+)+)[`(]", text)} - NOT_A_MODULE
    return sorted(lines | set(NAMED)), sorted(names)


# run in the user's interpreter: each line imports, each dotted name resolves (module, then attributes)
CHECK = """import importlib, sys
lines, names = {lines!r}, {names!r}
for line in lines:
    exec(line, {{}})
for name in names:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:i]))
            break
        except ModuleNotFoundError:
            continue
    for attribute in parts[i:]:
        found = getattr(found, attribute)
print("imported", len(lines) + len(names))
"""


def check_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    lines, names = documented_imports()
    return subprocess.run([sys.executable, "-c", CHECK.format(lines=lines, names=names)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)


def test_the_documented_import_paths_work_from_an_init_project(project) -> None:
    lines, names = documented_imports()
    assert {"dltrain.dist.is_main", "dltrain.data.scaled_splits", "dltrain.plugins"} <= set(names)
    assert "from dltrain.models import MODELS" in lines and "from dltrain.rules import Fraction, Length" in lines
    done = check_imports(project)
    assert done.returncode == 0 and f"imported {len(lines) + len(names)}" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
def test_the_documented_import_paths_work_from_an_installed_wheel(tmp_path, wheel_site) -> None:
    """dltrain installed as a wheel (no source tree on the path), run from a `dltrain init` project outside it."""
    env = {"PYTHONPATH": str(wheel_site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    runner = "import sys; from dltrain.cli.main import main; sys.argv[0] = 'dltrain'; main()"
    made = subprocess.run([sys.executable, "-c", runner, "init", "p"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=env)
    assert made.returncode == 0, made.stderr
    where = subprocess.run([sys.executable, "-c", "import dltrain; print(dltrain.__file__)"], cwd=tmp_path / "p",
                           capture_output=True, text=True, timeout=60, env=env)
    assert where.stdout.strip().startswith(str(wheel_site)), where.stdout  # the wheel's copy, not this checkout
    done = check_imports(tmp_path / "p", env)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]
    write_files(tmp_path / "p", doc_files())  # the worked example trains from the wheel too (its presets inside it)
    args = ["optim=lion", "sched=rsqrt", "plugins=[models.py,data.py,lion.py,rsqrt.py]", "trainer.max_epochs=1",
            *QUICK, "hydra.run.dir=r"]
    trained = subprocess.run([sys.executable, "-c", runner, *args], cwd=tmp_path / "p", capture_output=True,
                             text=True, timeout=300, env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "name: lion" in (tmp_path / "p" / "r" / "config.yaml").read_text()
