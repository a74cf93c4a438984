"""`dltrain init DIR`: a working starter project (a model, a dataset read from a file, their commented YAMLs,
an experiment with a sweep, a README), copied from dltrain/starter/ plus a generated data file."""
from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

STARTER = Path(__file__).parents[1] / "starter"


def points_csv(n: int = 1200, seed: int = 0) -> str:
    """Two noisy concentric rings (label 0 inner, 1 outer): not linearly separable, easy for a small MLP."""
    rng = random.Random(seed)
    rows = ["x1,x2,label"]
    for i in range(n):
        label = i % 2
        radius = (1.0 if label == 0 else 2.0) + rng.gauss(0, 0.25)
        angle = rng.uniform(0, 2 * math.pi)
        rows.append(f"{radius * math.cos(angle):.5f},{radius * math.sin(angle):.5f},{label}")
    return "\n".join(rows) + "\n"


def init_project(target: Path) -> list[Path]:
    """Write the starter into `target` (new or empty); returns the files written."""
    from dltrain.core.registry import ConfigError

    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not an empty folder; give a new folder name")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(STARTER.rglob("*")):
        if source.is_file() and "__pycache__" not in source.parts:
            name = ".gitignore" if source.name == "gitignore" else source.relative_to(STARTER)
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            written.append(destination)
    data = target / "data" / "points.csv"
    data.parent.mkdir(exist_ok=True)
    data.write_text(points_csv())
    return [*written, data]
