"""A user's own project: where its configs are, which Python it registers components from, and provenance.

A project is a folder with a `conf/` that mirrors dltrain's groups (`conf/model/mynet.yaml`, ...) and,
optionally, `conf/project/default.yaml` (its own defaults and its `plugins`: Python files or modules that
register components with `dltrain.register_model` & co.). Code is imported only from there (the project the
user runs in or names) and from installed packages' `dltrain.run.plugins` entry points, never from a list read
out of a checkpoint or a run folder. No torch import here: `dltrain --help` reads the project's choices.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ENTRY_POINTS = "dltrain.plugins"
GROUP_DIRS = ("model", "data", "optim", "sched", "reg", "early_stopping", "trainer", "experiment", "project")


def is_project_conf(conf: Path) -> bool:
    """A conf/ folder with at least one of dltrain's config groups in it."""
    return conf.is_dir() and any((conf / group).is_dir() for group in GROUP_DIRS)


CONFIG_DIR_FLAGS = ("--config-dir", "-cd")  # Hydra's flag for a primary config folder: ours names a project's conf/


def config_dir_arg(args: list[str]) -> tuple[tuple[str, str] | None, list[str]]:
    """The one reading of --config-dir/-cd: (the flag as typed, its value; '' when empty or missing) of the first
    one given, or None, and the other arguments."""
    found: tuple[str, str] | None = None
    rest: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg in CONFIG_DIR_FLAGS:
            found, skip = found or (arg, args[i + 1] if i + 1 < len(args) else ""), True
        elif arg.startswith(tuple(f"{flag}=" for flag in CONFIG_DIR_FLAGS)):
            found = found or tuple(arg.split("=", 1))
        else:
            rest.append(arg)
    return found, rest


def searchpath_entry(args: list[str]) -> str | None:
    """The first folder of a hydra.searchpath=[...] override (file:// taken off)."""
    for arg in args:
        if arg.startswith("hydra.searchpath="):
            entries = arg.split("=", 1)[1].strip("[]").split(",")
            return entries[0].strip().strip("'\"").removeprefix("file://") or None if entries else None
    return None


def project_root(args: list[str] = (), cwd: Path | None = None) -> Path | None:
    """The project the user runs: named by --config-dir/-cd or hydra.searchpath, else the working directory
    when its conf/ holds dltrain groups, else none. The root is the folder that holds that conf/."""
    config_dir, rest = config_dir_arg(list(args))
    return root_of(config_dir[1] if config_dir else None, rest, cwd)


def root_of(config_dir: str | None, rest: list[str], cwd: Path | None = None) -> Path | None:
    """project_root from a command line already read: --config-dir's value and the other arguments."""
    named = config_dir or searchpath_entry(rest)
    if named:
        return Path(named).expanduser().resolve().parent
    here = (cwd or Path.cwd()).resolve()
    return here if is_project_conf(here / "conf") and not is_builtin_conf(here / "conf") else None


def is_builtin_conf(conf: Path) -> bool:
    """dltrain's own conf/ (in its source tree): its configs, not a user's project."""
    from dltrain.core.conf_dirs import config_dir

    return conf.resolve() == config_dir().resolve()


def project_conf(root: Path | None) -> Path | None:
    return root / "conf" if root is not None and (root / "conf").is_dir() else None


def entry_point_modules() -> list[str]:
    """Modules that installed packages register under the `dltrain.run.plugins` entry-point group."""
    return sorted({ep.value.split(":")[0] for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)})


def resolve(plugins: list[str], root: Path | None) -> list[str]:
    """Absolute paths of plugin files (relative to the project root) and names of plugin modules."""
    resolved = []
    for item in plugins:
        if item.endswith(".py") or "/" in item:
            path = Path(item).expanduser()
            if not path.is_absolute():
                if root is None:
                    raise_config(f"plugins lists {item}, but there is no project folder to find it in; run dltrain "
                                 "from the project (the folder with conf/) or give its absolute path")
                path = root / path
            if not path.is_file():
                raise_config(f"plugins lists {item}, which is not a file at {path}; fix the path in the project's "
                             "conf/project/default.yaml (relative to the project folder)")
            resolved.append(str(path.resolve()))
        else:
            resolved.append(item)
    return resolved


def raise_config(message: str) -> None:
    from dltrain.core.registry import ConfigError

    raise ConfigError(message)


def load(plugins: list[str], root: Path | None = None) -> list[str]:
    """Import the installed entry points and the project's plugins (idempotent); returns what was imported."""
    for module in entry_point_modules():
        import_module(module, None)
    loaded = resolve(list(plugins or []), root)
    for item in loaded:
        import_module(item, root)
    return loaded


def import_module(item: str, root: Path | None) -> None:
    """A file by path (as module `dltrain_user.<stem>`) or a module by name (with the project root on sys.path).
    An error in the user's code is one line that names their file and line."""
    try:
        if item.endswith(".py"):
            name = f"dltrain_user.{Path(item).stem}"
            if sys.modules.get(name) is not None and getattr(sys.modules[name], "__file__", None) == item:
                return
            spec = importlib.util.spec_from_file_location(name, item)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            if root is not None and str(root) not in sys.path:
                sys.path.insert(0, str(root))
            importlib.import_module(item)
    except ImportError as err:
        sys.modules.pop(f"dltrain_user.{Path(item).stem}", None)
        raise_config(f"plugin {item} could not be imported: {err}")
    except SystemExit as err:  # exit 0 would end the run silently, having trained nothing
        sys.modules.pop(f"dltrain_user.{Path(item).stem}", None)
        raise_config(f"plugin {item} called sys.exit({err.code!r}) while importing{user_frame(err)}: a plugin only "
                     "registers components; remove the exit (guard a script's own code with if __name__ == '__main__')")
    except Exception as err:  # noqa: BLE001  (the user's code: one line naming their file)
        sys.modules.pop(f"dltrain_user.{Path(item).stem}", None)
        raise_config(f"plugin {item} failed while importing{user_frame(err)}: {type(err).__name__}: {err}")


def user_frame(err: BaseException) -> str:
    """' (FILE:LINE)' of the innermost traceback frame outside dltrain, torch and the standard library."""
    import traceback

    skip = (str(Path(__file__).parents[1]), os.path.dirname(os.__file__), "site-packages", "<frozen")
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(skip)
              and "site-packages" not in f.filename and "<frozen" not in f.filename]
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def project_plugins(root: Path | None) -> list[str]:
    """The `plugins` a project's own config lists (its conf/project/default.yaml), composed as a run would."""
    if project_conf(root) is None:
        return []
    from hydra import compose, initialize_config_dir

    from dltrain.core.conf_dirs import config_dir
    from dltrain.run.overrides import quoted

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[{quoted(f'file://{project_conf(root)}')}]"])
    return list(cfg.get("plugins") or [])


def git(folder: Path, *args: str) -> str | None:
    """A git command's output in `folder` (None: no git, not a repository, or it failed)."""
    try:
        out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(folder: Path | None) -> dict[str, Any]:
    """The folder's git commit and whether it has uncommitted changes (None outside a repository)."""
    commit = git(folder, "rev-parse", "HEAD") if folder is not None else None
    status = git(folder, "status", "--porcelain") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the code being run, when it runs from a git checkout."""
    return git(cwd or Path(__file__).parents[1], "rev-parse", "HEAD") or None


def provenance(root: Path | None) -> dict[str, Any]:
    """What produced a run: the project's folder and git state, and the versions of dltrain, torch and Python."""
    import platform

    from dltrain.core import VERSION

    versions = {"dltrain": VERSION, "python": platform.python_version()}
    try:
        versions["torch"] = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        versions["torch"] = None
    state = git_state(root)
    return {"project": str(root) if root else None, "project_git_commit": state["commit"],
            "project_git_dirty": state["dirty"], **versions}


def run_origin(root: Path | None) -> dict[str, Any]:
    """Where a run came from, computed once per run (git runs 2-3 times) for its metrics.json and every checkpoint
    it writes: dltrain's git commit and the provenance of the project `root`."""
    return {"git_commit": git_commit(), "provenance": provenance(root)}
