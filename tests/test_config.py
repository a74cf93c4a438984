"""Every YAML in conf/ and experiments/ composes, names only options its builder takes, and builds."""
from __future__ import annotations

import pytest

from dltrain.config import config_dir, groups
from dltrain.data import DATASETS
from dltrain.models import MODELS
from dltrain.optim import OPTIMIZERS
from dltrain.registry import check_kwargs
from dltrain.sched import SCHEDULES
from dltrain.train import build
from tests.conftest import MNIST_T10K, compose

REGISTRIES = {"model": (MODELS, ("in_shape", "num_outputs")), "data": (DATASETS, ("seed",)),
              "optim": (OPTIMIZERS, ("params",)), "sched": (SCHEDULES, ("lr0", "total"))}
SKIPPED_KEYS = {"data": ("name", "batch_size", "augment"), "sched": ("name", "interval", "warmup")}
CHOICES = [(g, c) for g, cs in groups().items() if g != "experiment" for c in cs]
EXPERIMENTS = groups().get("experiment", [])


@pytest.mark.parametrize("group, choice", CHOICES)
def test_every_choice_composes_and_fits_its_builder(group: str, choice: str) -> None:
    cfg = compose([f"{group}={choice}", *(["data.path=corpus.txt"] if (group, choice) == ("data", "text") else [])])
    node = cfg[group]
    assert isinstance(node, dict) and node, f"{group}/{choice}.yaml is empty"
    if group in REGISTRIES:
        registry, runtime = REGISTRIES[group]
        assert node["name"] in registry.names(), f"{group}/{choice}.yaml names an unregistered builder"
        skipped = SKIPPED_KEYS.get(group, ("name",))
        kwargs = {k: v for k, v in node.items() if k not in skipped}
        check_kwargs(group, node["name"], registry.get(node["name"]), kwargs, runtime)


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
    parts = build(compose([f"model={model}", *MODEL_DATA.get(model, [])]))
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
        parts = build({**cfg, "model": {"name": "mlp", "hidden": [8]}} if data not in ("text",) else
                      {**cfg, "model": {"name": "lstm", "hidden_size": 8}})
    except Exception as err:  # noqa: BLE001
        assert data in ("fashion_mnist", "cifar10"), f"data={data}: {err}"
        assert "data.download=true" in str(err) and "empty" in str(err)
        return
    assert len(parts.data.train) > 0 and len(parts.data.val) > 0


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds(name: str) -> None:
    cfg = compose([f"experiment={name}"])
    build(cfg)
