"""Where the YAML configs live and which choices each config group offers. No torch import: `dltrain --help`
reads this."""
from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """conf/ inside an installed wheel (dltrain/conf), else the source checkout's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"dltrain's conf/ folder is missing next to {here}; reinstall the package")


def groups() -> dict[str, list[str]]:
    """Config groups and their choices, read from the YAML file names."""
    root = config_dir()
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(root.iterdir()) if d.is_dir()}
