"""Faults that tests inject into a child process themselves (production code has no test hooks).

`python -c "import tests.faults as f; f.dead_worker_cli()" ARGS...` runs the `dltrain` command with a DDP
worker entry point whose rank 1 dies at once; spawn pickles the entry point by name, so the workers import it
from here (PYTHONPATH must hold the repository).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def worker_dies_on_rank_1(config: Any, run_dir: str, overrides: list[str]) -> None:
    if os.environ.get("RANK") == "1":
        os._exit(3)
    from dltrain.train import train

    train(config, Path(run_dir), overrides)


def dead_worker_cli() -> None:
    import dltrain.train
    from dltrain.cli import main

    dltrain.train.worker = worker_dies_on_rank_1
    sys.argv = ["dltrain", *sys.argv[1:]]
    main()
