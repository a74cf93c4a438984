"""Every YAML in conf/ and experiments/ composes, passes the parse at the door (every key an option of the
builder or class it configures), and builds."""
from __future__ import annotations

import pytest

from dltrain.build import build
from dltrain.conf_dirs import config_dir, groups
from dltrain.config import RunConfig
from dltrain.data import DATASETS
from dltrain.models import MODELS
from dltrain.registry import ConfigError
from tests.conftest import MNIST_T10K, compose, parse

CHOICES = [(g, c) for g, cs in groups().items() if g != "experiment" for c in cs]
EXPERIMENTS = groups().get("experiment", [])


@pytest.mark.parametrize("group, choice", CHOICES)
def test_every_choice_composes_and_parses(group: str, choice: str) -> None:
    cfg = compose([f"{group}={choice}", *(["data.path=corpus.txt"] if (group, choice) == ("data", "text") else [])])
    assert isinstance(cfg[group], dict) and cfg[group], f"{group}/{choice}.yaml is empty"
    config = RunConfig.parse(cfg)  # raises a ConfigError naming the key a YAML gets wrong
    if group in ("model", "data", "optim"):
        spec = config.data.spec if group == "data" else getattr(config, group)
        assert spec.name == cfg[group]["name"]


def test_every_problem_of_a_config_is_reported_at_once() -> None:
    """torchtune-style: one ConfigError, one line per problem, across groups."""
    with pytest.raises(ConfigError) as err:
        parse(["optim.lr=-1", "model.dropout=2.0", "trainer.max_epochs=0", "+model.widht=3",
               "early_stopping.patience=-1", "data.batch_size=0"])
    problems = err.value.problems
    assert len(problems) == 5, problems  # model.dropout's range is the model builder's, checked when it builds
    for fragment in ("optim.lr=-1", "trainer.max_epochs=0", "model.widht is not an option", "patience=-1",
                     "data.batch_size=0"):
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)


def test_a_single_problem_is_a_single_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse(["optim.lr=-1"])
    assert err.value.problems == ["optim.lr=-1 must be >= 0"] and "\n" not in str(err.value)


def test_every_yaml_key_is_commented() -> None:
    """Each key line of conf/ says what it means (and its unit): a newcomer reads the YAML, not the code."""
    for path in config_dir().rglob("*.yaml"):
        if path.parent.name == "experiment" or path.name == "config.yaml":
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith(("#", "-", "defaults:")) and ":" in stripped \
                    and not stripped.endswith(":") and stripped.split(":")[0] not in ("name",):
                assert "#" in line, f"{path.relative_to(config_dir())}: '{stripped}' has no comment"


# Data sets that need files or a path get them here; models that need sequences get sequence data.
NEEDS = {"mnist": [f"data.root={MNIST_T10K}"], "text": ["data.path=__TEXT__"]}
MODEL_DATA = {"rnn": ["data=digit_rows"], "lstm": ["data=digit_rows"], "gru": ["data=digit_rows"],
              "autoencoder": ["task=reconstruction"], "gan": ["task=adversarial"]}


@pytest.mark.parametrize("model", sorted(MODELS.names()))
def test_every_model_builds_with_a_fitting_dataset(model: str) -> None:
    parts = build(parse([f"model={model}", *MODEL_DATA.get(model, [])]))
    assert sum(p.numel() for p in parts.model.parameters()) > 0


@pytest.mark.parametrize("data", sorted(DATASETS.names()))
def test_every_dataset_builds_or_explains_what_is_missing(data: str, tmp_path) -> None:
    extra = [o.replace("__TEXT__", str(tmp_path / "corpus.txt")) for o in NEEDS.get(data, [])]
    (tmp_path / "corpus.txt").write_text("hello world, " * 200)
    if data in ("fashion_mnist", "cifar10", "mnist") and not extra:
        extra = [f"data.root={tmp_path / 'empty'}"]
    if data == "mnist" and not MNIST_T10K.is_dir():
        pytest.skip("the shared MNIST t10k files are not beside this checkout")
    cfg = compose([f"data={data}", *extra])
    try:
        parts = build(RunConfig.parse({**cfg, "model": {"name": "mlp", "hidden": [8]}} if data not in ("text",) else
                                      {**cfg, "model": {"name": "lstm", "hidden_size": 8}}))
    except Exception as err:  # noqa: BLE001
        assert data in ("fashion_mnist", "cifar10"), f"data={data}: {err}"
        assert "data.download=true" in str(err) and "empty" in str(err)
        return
    assert len(parts.data.train) > 0 and len(parts.data.val) > 0


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds(name: str) -> None:
    build(parse([f"experiment={name}"]))
