"""The vectorised launcher's ties to Hydra: its registration as a plugin, and its shortcut through Hydra's
composition of each job before the launch.

Hydra's sweeper composes every job of a batch to validate it (`Sweeper.validate_batch_is_legal`), drops the
result, and the launcher composes each job again: 0.25 s a job on the 2-core machine, 4 s of a 16-job sweep's
12. dltrain's front door has already composed every value of every swept key before Hydra starts (cli/main.py
sweep_problem, run/points.py), so the sweeper's pass is skipped: a combination of values that still does not
compose fails where the launcher composes that job, reported as Hydra reports a job that fails.
"""
from __future__ import annotations

from typing import Any


def skip_validation(loader: Any) -> Any:
    """Wrap the config loader's load_sweep_config: outside a launch (the sweeper's validation) it composes nothing;
    inside one (`wrapper.launching = True`) it composes as before. Returns the wrapper."""
    load = loader.load_sweep_config
    if getattr(load, "skips_validation", False):
        return load

    def load_sweep_config(master_config: Any, sweep_overrides: list[str]) -> Any:
        if not load_sweep_config.launching:  # type: ignore[attr-defined]
            return None  # the sweeper's check: the door composed this point already
        return load(master_config=master_config, sweep_overrides=list(sweep_overrides))

    load_sweep_config.skips_validation = True  # type: ignore[attr-defined]
    load_sweep_config.launching = False  # type: ignore[attr-defined]
    loader.load_sweep_config = load_sweep_config
    return load_sweep_config


def register() -> None:
    """Make the launcher known to Hydra. Hydra finds plugins by walking the hydra_plugins folders; an editable
    install (pip install -e) maps ours by an import hook that this walk does not see, so it is registered here
    (Hydra's own Plugins.register), before Hydra instantiates a launcher."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.dltrain_launcher import VectorizedLauncher as Named

    Plugins.instance().register(Named)
