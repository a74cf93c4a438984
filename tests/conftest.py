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

    from dltrain.core.conf_dirs import config_dir
    from dltrain.run.config import to_plain

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_plain(hydra_compose("config", overrides=list(overrides)))


def parse(overrides: list[str] = ()) -> Any:
    """The checked RunConfig for these overrides (raises the ConfigError a user would see)."""
    from dltrain.run.config import RunConfig

    return RunConfig.parse(compose(overrides))


def run(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """A real in-process run of `dltrain OVERRIDES` into run_dir; returns its metrics.json content."""
    from dltrain.run.train import run_job

    return run_job(parse(overrides), run_dir, list(overrides))


def cli(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed `dltrain` command, as a user runs it."""
    exe = Path(sys.executable).parent / "dltrain"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def write_files(root: Path, files: dict[str, str]) -> Path:
    """A folder of text files (a user's project): {relative path: text}; returns `root`."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


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


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """One intra-op thread for the torch work the tests do by hand in this process (models built and stepped,
    tensors compared). torch's default, a thread per core, spends most of such tiny ops waiting at its thread
    barriers on the 2-core machine: tests/models/test_families.py's eight 80-step runs took 63 s with two threads
    and 12 s with one (the GRU's 22 s -> 1 s). A run (`run` here, or the CLI) still sets its own threads by its
    rule, OMP_NUM_THREADS or trainer.threads (run/threads.py) and restores this count afterwards; child processes
    do not inherit it."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dltrain installed from this checkout as a real wheel into a folder of its own (`pip install --target`, no
    source tree on the path), once per test session: PYTHONPATH=<it> runs it as a user's non-editable install."""
    site = tmp_path_factory.mktemp("wheel") / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(site), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    return site


# The two tiers. `make check` runs what stays in this process; `make test` runs everything. A test is `e2e` by
# what it uses, found in its code rather than marked by hand: the `cli` helper or `subprocess` (a real dltrain
# process), a server, a wheel install, several processes. `slow` marks long in-process runs by hand.
E2E_NAMES = {"cli", "subprocess", "Popen", "run_cli", "spawn", "launch", "torchrun", "wheel_site", "tensorboard",
             "serve", "pty", "openpty", "fork"}
E2E_FIXTURES = {"wheel_site"}
TESTS = REPO / "tests"


MULTI_PROCESS_SETTINGS = ("trainer.devices=2", "trainer.devices=3", "trainer=ddp", "SLURM_", "LOCAL_WORLD_SIZE")


def uses_processes(function: Any, seen: set | None = None) -> bool:
    """Whether a test function, or a helper of the test package it calls (followed through its names), starts a
    process: names one of E2E_NAMES, or asks for several DDP processes."""
    seen = seen if seen is not None else set()
    code = getattr(function, "__code__", function)
    if id(code) in seen or not hasattr(code, "co_names"):
        return False
    seen.add(id(code))
    strings = [s for c in code.co_consts for s in (c if isinstance(c, (tuple, frozenset)) else (c,))
               if isinstance(s, str)]  # a list literal of strings is one tuple constant
    if E2E_NAMES & set(code.co_names) or any(s in c for c in strings for s in MULTI_PROCESS_SETTINGS):
        return True
    nested = [c for c in code.co_consts if hasattr(c, "co_names")]
    module = getattr(function, "__globals__", {})
    helpers = [module.get(name) for name in code.co_names]
    helpers = [h for h in helpers if hasattr(h, "__code__") and Path(h.__code__.co_filename).is_relative_to(TESTS)]
    return any(uses_processes(c, seen) for c in nested) or any(uses_processes(h, seen) for h in helpers)


def fixture_functions(item: pytest.Item) -> list[Any]:
    """The functions of the fixtures a test uses, its fixtures' fixtures included: a run shared by a module-scoped
    fixture tiers the tests that read it as if each made it."""
    info = getattr(item, "_fixtureinfo", None)
    return [d.func for defs in (info.name2fixturedefs.values() if info else ()) for d in defs]


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        functions = [f for f in (getattr(item, "function", None), *fixture_functions(item)) if f is not None]
        if any(uses_processes(f) for f in functions) or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)

