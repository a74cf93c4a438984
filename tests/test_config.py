"""Every YAML in conf/ and experiments/ composes, passes the parse at the door (every key an option of the
builder or class it configures), and builds."""
from __future__ import annotations

import pytest

from dltrain.core.conf_dirs import config_dir, groups
from dltrain.core.registry import ConfigError
from dltrain.data import DATASETS
from dltrain.models import MODELS
from dltrain.run.assemble import build
from dltrain.run.config import RunConfig
from tests.conftest import compose, parse

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
    assert len(problems) == 6, problems  # model.dropout's range too: declared beside its type, checked at the door
    for fragment in ("optim.lr=-1", "model.dropout=2.0 must be in [0, 1)", "trainer.max_epochs=0",
                     "model.widht is not an option", "patience=-1", "data.batch_size=0"):
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
NEEDS = {"text": ["data.path=__TEXT__"]}  # data=mnist: its shipped t10k files
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
    if data in ("fashion_mnist", "cifar10") and not extra:
        extra = [f"data.root={tmp_path / 'empty'}"]
    cfg = compose([f"data={data}", *extra])
    try:
        parts = build(RunConfig.parse({**cfg, "model": {"name": "mlp", "hidden": [8]}} if data not in ("text",) else
                                      {**cfg, "model": {"name": "lstm", "hidden_size": 8}}, inputs=True))
    except ConfigError as err:  # the user's own files: a one-line message saying what to give
        assert "\n" not in str(err)
        if data in ("csv", "arrays", "image_folder", "imdb"):
            assert f"data={data}" in str(err) and any(w in str(err) for w in ("needs data.", "data.root", "aclImdb")), str(err)
            return
        assert data in ("fashion_mnist", "cifar10"), f"data={data}: {err}"
        assert "data.download=true" in str(err) and "empty" in str(err)
        return
    assert len(parts.data.train) > 0 and len(parts.data.val) > 0


USER_DATA = {"imdb_rnn_vs_lstm": "aclImdb"}  # experiments on data only the user has: built in tests/data


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds(name: str) -> None:
    config = parse([f"experiment={name}"])
    if name in USER_DATA:  # the folder is the user's: the build says, in one line, where it looked
        with pytest.raises(ConfigError, match=USER_DATA[name]):
            build(config)
        return
    build(config)


@pytest.mark.parametrize("overrides, message", [
    (["optim.lr=1e308"], "optim.lr=1e+308 is too large for float32 training"),
    (["model.slope=nan"], "model.slope=nan is not a finite number"),
    (["optim.lr=inf"], "optim.lr=inf is not a finite number"),
    (["+foo=1"], "foo is not a setting of dltrain (added with +foo=...?)"),
    (["trainer.seed=99999999999999999999999"], "trainer.seed=99999999999999999999999 must be in [0, 2**63)"),
    (["trainer.resume=' '"], "trainer.resume is empty"),
])
def test_settings_that_were_silently_accepted_or_crashed_are_refused_at_the_door(overrides, message) -> None:
    with pytest.raises(ConfigError) as err:
        parse(overrides)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(message), err.value.problems


@pytest.mark.parametrize("overrides, message", [
    (["data.batch_size=5000"], "data.batch_size=5000 is larger than the training split (1078 samples)"),
])
def test_settings_that_need_the_data_or_the_model_are_refused_when_built(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(parse(overrides))
