"""Where the YAML configs live and which choices each config group offers. No torch import: `dltrain --help`
reads this."""
from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """conf/ inside an installed wheel (dltrain/conf), else the source checkout's top-level conf/."""
    here = Path(__file__).resolve().parents[1]  # the dltrain package folder
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"dltrain's conf/ folder is missing next to {here}; reinstall the package")


def groups(project_conf: Path | None = None) -> dict[str, list[str]]:
    """Config groups and their choices, read from the YAML file names: dltrain's, plus a user project's conf/."""
    found: dict[str, set[str]] = {}
    for root in (config_dir(), project_conf):
        if root is None or not root.is_dir():
            continue
        for folder in sorted(d for d in root.iterdir() if d.is_dir() and d.name != "hydra"):  # hydra/: Hydra's own
            found.setdefault(folder.name, set()).update(p.stem for p in folder.glob("*.yaml"))
    return {name: sorted(choices) for name, choices in sorted(found.items())}
