"""A boolean key takes a boolean: every true/false key of every YAML in conf/ refuses a word ('off', 'maybe', 1)
in one line naming the key, at the door (an accepted 'off' was truthy: early stopping stayed on)."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from dltrain.core.conf_dirs import groups
from dltrain.core.registry import ConfigError
from dltrain.run.config import RunConfig
from tests.conftest import cli, compose

NOT_BOOLEANS = ("off", "maybe", "sometimes", "yes", "no", "on", 1, 0, "true")  # "true" quoted: a string


def boolean_keys(node: Any, prefix: str) -> list[str]:
    if not isinstance(node, dict):
        return [prefix] if isinstance(node, bool) else []
    return [key for name, value in node.items() for key in boolean_keys(value, f"{prefix}.{name}")]


REQUIRED = {("data", "text"): ["data.path=corpus.txt"]}  # choices with a key the user must give


def composed(group: str, choice: str) -> dict[str, Any]:
    return compose([f"{group}={choice}", *REQUIRED.get((group, choice), [])])


def every_boolean_key() -> list[tuple[str, str, str]]:
    """(group, choice, dotted key) for each true/false leaf of each group's YAML files."""
    found = []
    for group, choices in groups().items():
        for choice in [c for c in choices if group not in ("experiment",)]:
            found += [(group, choice, key) for key in boolean_keys(composed(group, choice)[group], group)]
    return found


BOOLEAN_KEYS = every_boolean_key()


def with_value(cfg: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(cfg)
    *path, leaf = key.split(".")
    node = changed
    for part in path:
        node = node[part]
    node[leaf] = value
    return changed


def test_conf_has_the_boolean_keys_this_test_is_about() -> None:
    keys = {key for _, _, key in BOOLEAN_KEYS}
    assert {"early_stopping.enabled", "early_stopping.restore_best", "trainer.compile", "trainer.ckpt.save_best",
            "model.batch_norm", "optim.nesterov", "data.augment.flip", "sched.staircase"} <= keys, keys


@pytest.mark.parametrize("group, choice, key", BOOLEAN_KEYS)
def test_every_boolean_key_refuses_a_word_in_one_line(group: str, choice: str, key: str) -> None:
    cfg = composed(group, choice)
    RunConfig.parse(cfg)  # as shipped: accepted
    for value in NOT_BOOLEANS:
        with pytest.raises(ConfigError) as err:
            RunConfig.parse(with_value(cfg, key, value))
        assert err.value.problems == [f"{key}={value!r} is not a boolean: write true or false"], (value, err.value)


@pytest.mark.parametrize("value", ["off", 1, 0])
def test_channels_last_takes_auto_true_or_false_only(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"trainer.channels_last=.* is not a choice of trainer; valid: 'auto' \| True"):
        RunConfig.parse(with_value(compose(), "trainer.channels_last", value))


def test_early_stopping_enabled_off_is_one_line_from_the_cli(tmp_path) -> None:
    result = cli(["early_stopping.enabled=off", "trainer.max_epochs=1"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "dltrain: error: early_stopping.enabled='off' is not a boolean: write true or false"
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("last.pt"))
