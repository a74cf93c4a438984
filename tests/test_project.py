"""A user's own project: `dltrain init`, their model/data/callback files, their YAMLs beside dltrain's, from any
folder, with DDP, resume, eval and export; code is never imported on a checkpoint's say-so."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dltrain.core import checkpoint
from tests.conftest import cli, write_files

QUICK = ["trainer.max_epochs=2", "trainer.log_every_n_steps=0"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proj") / "myproj"
    result = cli(["init", str(root)], cwd=root.parent)
    assert result.returncode == 0, result.stderr
    assert "next: cd" in result.stdout
    return root


@pytest.fixture(scope="module")
def first(project) -> Path:
    """The starter's QUICK run in its project (the unedited model), made once: the tests below only read it or copy
    it."""
    result = cli([*QUICK, "hydra.run.dir=first"], cwd=project)
    assert result.returncode == 0, result.stderr
    return project / "first"


def params_of(run_dir: Path) -> int:
    return sum(t.numel() for t in checkpoint.load(run_dir / "last.pt")["model"].values())


def test_the_starter_trains_its_own_model_on_its_own_data(project, first) -> None:
    report = json.loads((project / "first" / "metrics.json").read_text())
    config = (project / "first" / "config.yaml").read_text()
    assert "name: mynet" in config and "name: points" in config
    assert report["test"]["test/acc"] > 0.6  # two rings, chance 0.5
    assert report["provenance"]["project"] == str(project.resolve())
    assert report["provenance"]["torch"] == torch.__version__.split("+")[0] or report["provenance"]["torch"]


def test_editing_the_model_file_changes_the_next_run(project, first, tmp_path) -> None:
    models = project / "models.py"
    text = models.read_text()
    models.write_text(text.replace("HIDDEN_LAYERS = 2", "HIDDEN_LAYERS = 3"))
    try:
        after = cli([*QUICK, f"hydra.run.dir={tmp_path / 'b'}"], cwd=project)
    finally:
        models.write_text(text)
    assert after.returncode == 0, after.stderr
    assert params_of(tmp_path / "b") == params_of(first) + 32 * 32 + 32  # one more width-32 layer than the same run
    # of the unedited model


def test_sweep_resume_eval_export_and_builtins_beside_the_users(project, first) -> None:
    sweep = cli(["-m", "model.width=4,8", *QUICK, "hydra.sweep.dir=sweep"], cwd=project)
    assert sweep.returncode == 0, sweep.stderr
    assert len(list((project / "sweep").rglob("metrics.json"))) == 2
    builtin = cli(["model=mlp", "model.hidden=[8]", *QUICK, "hydra.run.dir=builtin"], cwd=project)
    assert builtin.returncode == 0, builtin.stderr  # a built-in model on the user's data
    shutil.copytree(first, project / "resumed")  # a finished QUICK run of the project, in a folder of its own
    resumed = cli(["trainer.max_epochs=3", "trainer.resume=resumed"], cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.load(project / "resumed" / "last.pt")["epoch"] == 3
    evaluated = cli(["eval", "resumed"], cwd=project)
    assert evaluated.returncode == 0 and "per-class accuracy" in evaluated.stdout, evaluated.stderr
    exported = cli(["export", "resumed"], cwd=project)
    assert exported.returncode == 0 and (project / "resumed" / "export" / "model.ts").is_file()
    ts = torch.jit.load(str(project / "resumed" / "export" / "model.ts"))
    assert ts(torch.zeros(3, 2)).shape == (3, 2)


def test_the_project_from_another_folder(project, tmp_path) -> None:
    trained = cli([*QUICK, "--config-dir", str(project / "conf"), "hydra.run.dir=run"], cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "name: mynet" in (tmp_path / "run" / "config.yaml").read_text()
    lost = cli(["eval", "run"], cwd=tmp_path)  # here is no project: its plugins are not imported
    assert lost.returncode == 2 and len(lost.stderr.strip().splitlines()) == 1
    assert "unknown model 'mynet'" in lost.stderr and "--project" in lost.stderr
    named = cli(["eval", "run", "--project", str(project)], cwd=tmp_path)
    assert named.returncode == 0 and "test/acc" in named.stdout, named.stderr
    searched = cli([f"hydra.searchpath=[file://{project / 'conf'}]", "model=mynet", *QUICK, "hydra.run.dir=run2"],
                   cwd=tmp_path)  # Hydra's own way of naming a config dir passes the up-front check too
    assert searched.returncode == 0, searched.stderr


def test_help_lists_the_projects_choices_without_importing_torch(project) -> None:
    code = ("import sys; sys.argv = ['dltrain', '--help']\nfrom dltrain.cli.main import main\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=60).stdout
    assert out.strip().endswith("NO-TORCH")
    assert "mynet" in out and "points" in out and "widths" in out and "adamw" in out


def test_user_errors_are_one_line_naming_their_file(project, tmp_path) -> None:
    yaml_error = cli(["model.width=abc", *QUICK], cwd=project)
    assert yaml_error.returncode == 2
    assert yaml_error.stderr.strip() == ("dltrain: error: model.width='abc' has the wrong type for model=mynet: "
                                         "expected int")
    data = project / "data.py"
    text = data.read_text()
    data.write_text(text + "\nraise RuntimeError('broken on purpose')\n")
    try:
        broken = cli(QUICK, cwd=project)
    finally:
        data.write_text(text)
    lines = broken.stderr.strip().splitlines()
    assert broken.returncode == 2 and len(lines) == 1
    assert f"{data.resolve()}:" in lines[0] and "broken on purpose" in lines[0]


USER_FILES = {
    "components.py": '''
import torch
from torch import nn
from dltrain import Callback, register_callback, register_model


class Wide(nn.Module):
    def __init__(self, features, outputs, width):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(features, width), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(width, outputs))

    def forward(self, x):
        return self.net(x)


@register_model("wide")
def build(*, in_shape, num_outputs, width: int = 24):
    return Wide(int(torch.tensor(in_shape).prod()), num_outputs, width)


@register_callback("epoch_counter")
class EpochCounter(Callback):
    def __init__(self, start: int = 0):
        self.seen = start

    def on_epoch_end(self, state):
        self.seen += 1

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, saved):
        self.seen = saved.get("seen", 0)
''',
    "conf/model/wide.yaml": "name: wide\nwidth: 24   # hidden units\n",
    "conf/project/default.yaml": "# @package _global_\nplugins: [components.py]\ncallbacks: {epoch_counter: {}}\n",
}


@pytest.fixture(scope="module")
def wide_project(tmp_path_factory) -> Path:
    """A project of the user's files with a DDP run of its model, cut after epoch 1 and resumed to 3 (`cut`), and
    the same run uninterrupted (`straight`)."""
    root = write_files(tmp_path_factory.mktemp("wide"), USER_FILES)
    args = ["model=wide", "data.batch_size=50", "trainer.log_every_n_steps=0", "trainer.devices=2"]
    straight = cli([*args, "trainer.max_epochs=3", "hydra.run.dir=straight"], cwd=root)
    assert straight.returncode == 0, straight.stderr
    first = cli([*args, "trainer.max_epochs=1", "hydra.run.dir=cut"], cwd=root)
    resumed = cli([*args, "trainer.max_epochs=3", "trainer.resume=cut"], cwd=root)
    assert first.returncode == 0 and resumed.returncode == 0, resumed.stderr
    return root


def test_a_user_model_class_trains_with_ddp_resumes_bit_exactly_and_exports(wide_project) -> None:
    a, b = (checkpoint.load(wide_project / d / "last.pt") for d in ("straight", "cut"))
    assert json.loads((wide_project / "cut" / "metrics.json").read_text())["world_size"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key  # dropout included: bit-exact
    assert b["callbacks"]["EpochCounter"] == {"seen": 3}  # the user's callback state survived the resume
    exported = cli(["export", "cut"], cwd=wide_project)
    assert exported.returncode == 0 and (wide_project / "cut" / "export" / "model.ts").is_file(), exported.stderr


def test_a_checkpoint_cannot_make_eval_import_code(wide_project, tmp_path) -> None:
    run_dir = wide_project / "planted"
    shutil.copytree(wide_project / "straight", run_dir)  # a run of the user's model `wide`
    marker = tmp_path / "pwned"
    (run_dir / "components.py").write_text(f"open({str(marker)!r}, 'w').close()\n")  # a planted plugin
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli(["eval", str(run_dir)], cwd=elsewhere)
    assert result.returncode == 2 and "unknown model 'wide'" in result.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_the_scaffold_end_to_end_with_a_non_editable_install(tmp_path, wheel_site) -> None:
    """CI: init, train, sweep, resume, eval, export from a folder outside the repo, dltrain installed as a wheel."""
    site = wheel_site
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    runner = "import sys; from dltrain.cli.main import main; sys.argv[0] = 'dltrain'; main()"

    def dltrain(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", runner, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=300, env=env)

    assert dltrain("init", "p", cwd=tmp_path).returncode == 0
    project = tmp_path / "p"
    steps = [(*QUICK, "hydra.run.dir=r"), ("-m", "optim=sgd,adam", *QUICK, "hydra.sweep.dir=s"),
             ("trainer.max_epochs=3", "trainer.resume=r"), ("eval", "r"), ("export", "r")]
    for args in steps:
        result = dltrain(*args, cwd=project)
        assert result.returncode == 0, (args, result.stderr[-2000:])
    assert checkpoint.load(project / "r" / "last.pt")["epoch"] == 3
    assert len(list((project / "s").rglob("metrics.json"))) == 2 and (project / "r" / "export" / "model.ts").is_file()


def test_an_installed_package_registers_components_through_its_entry_point(tmp_path) -> None:
    """A pip-installed package of components (entry-point group `dltrain.run.plugins`) works with no plugins key."""
    site = tmp_path / "site"
    (site / "tinymodels").mkdir(parents=True)
    (site / "tinymodels" / "__init__.py").write_text(
        "from torch import nn\nfrom dltrain import register_model\n\n@register_model('tiny')\n"
        "def build(*, in_shape, num_outputs, width: int = 4):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, num_outputs))\n")
    info = site / "tinymodels-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinymodels\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dltrain.plugins]\ntinymodels = tinymodels\n")
    project = tmp_path / "proj"
    (project / "conf" / "model").mkdir(parents=True)
    (project / "conf" / "model" / "tiny.yaml").write_text("name: tiny\nwidth: 6   # hidden units\n")
    import os

    result = cli(["model=tiny", *QUICK, "hydra.run.dir=run"], cwd=project,
                 env={"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 0, result.stderr
    assert "0.weight" not in checkpoint.load(project / "run" / "last.pt")["model"]  # Flatten has no weights
    assert checkpoint.load(project / "run" / "last.pt")["model"]["1.weight"].shape == (6, 64)


def test_a_runs_origin_names_dltrains_commit_and_versions(tmp_path) -> None:
    """What metrics.json and each checkpoint record of where a run came from (computed once per run)."""
    import tomllib

    import dltrain
    from dltrain.run.plugins import run_origin

    origin = run_origin(tmp_path)  # a project folder outside any git checkout
    here = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(dltrain.__file__).parent, capture_output=True,
                          text=True)
    assert origin["git_commit"] == (here.stdout.strip() or None if here.returncode == 0 else None)
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert origin["provenance"]["dltrain"] == dltrain.__version__ == pyproject["project"]["version"]
    assert origin["provenance"]["project"] == str(tmp_path)
    assert (origin["provenance"]["project_git_commit"], origin["provenance"]["project_git_dirty"]) == (None, None)
    assert run_origin(None)["provenance"]["project"] is None
