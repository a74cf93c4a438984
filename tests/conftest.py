"""Shared helpers: compose a real config with Hydra's compose API and run it in-process, or run the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_T10K = REPO / "dltrain" / "data" / "mnist_t10k"  # the real MNIST test set, shipped with dltrain


def compose(overrides: list[str] = ()) -> dict[str, Any]:
    """The resolved config for these overrides, as plain dicts (what a run receives)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dltrain.conf_dirs import config_dir
    from dltrain.config import to_plain

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_plain(hydra_compose("config", overrides=list(overrides)))


def parse(overrides: list[str] = ()) -> Any:
    """The checked RunConfig for these overrides (raises the ConfigError a user would see)."""
    from dltrain.config import RunConfig

    return RunConfig.parse(compose(overrides))


def run(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """A real in-process run of `dltrain OVERRIDES` into run_dir; returns its metrics.json content."""
    from dltrain.train import run_job

    return run_job(parse(overrides), run_dir, list(overrides))


def cli(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed `dltrain` command, as a user runs it."""
    exe = Path(sys.executable).parent / "dltrain"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def load_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in the run's TensorBoard event files, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


FAST = ["trainer.max_epochs=3", "model.hidden=[32]", "trainer.log_every_n_steps=0"]


@pytest.fixture
def fast() -> list[str]:
    return list(FAST)


@pytest.fixture(scope="session")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dltrain installed from this checkout as a real wheel into a folder of its own (`pip install --target`, no
    source tree on the path), once per test session: PYTHONPATH=<it> runs it as a user's non-editable install."""
    site = tmp_path_factory.mktemp("wheel") / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(site), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    return site
