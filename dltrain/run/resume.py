"""Resuming a run: `dltrain trainer.resume=DIR` continues *the run* in DIR, with its own config.

Every run records its effective overrides (the first launch's, with each resume's on top) and its project folder
in DIR/resume.yaml, rewritten atomically when a resume has passed its checks. A resume replays them under the
command line's own (`merge`: the command line wins, key by key), so `dltrain trainer.resume=DIR` alone continues
with the run's overrides and experiment, and `trainer.max_epochs=25` beside it changes that one setting; the job
reports every setting that differs from the checkpoint's config in one line (`changes`). A run of dltrain 0.1.0
has no resume.yaml: Hydra's .hydra/overrides.yaml (its first launch's) and the search path in .hydra/hydra.yaml
stand in. Hydra's own overrides (`hydra.*`, the project's search path) are never replayed, and no code is
imported because a run folder names a project: a run of a project resumes only in that project (the working
directory's, or one named with --config-dir). No torch import here: the command line reads this.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from dltrain.core.registry import ConfigError, check

RECORD = "resume.yaml"  # in the run folder: {overrides: [...], project: folder or null}
NOT_REPLAYED = ("trainer.resume",)  # where to resume from is the command line's alone


def parsed(overrides: list[str]) -> list[Any]:
    """Hydra's own reading of each override (its type: change, +add, ++force-add or ~delete; its key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def identity(override: Any) -> tuple[str, str | None]:
    return override.key_or_group, override.package


def is_task_override(arg: str) -> bool:
    """A KEY=VALUE (or ~KEY) of the run's config, not one of Hydra's own (`hydra.run.dir`, `hydra/launcher`)."""
    return (not arg.startswith("-") and ("=" in arg or arg.startswith("~"))
            and not arg.lstrip("+~").startswith(("hydra.", "hydra/")))


def replayable(overrides: list[str]) -> list[str]:
    """What a later resume may replay of a run's task overrides: neither Hydra's own nor trainer.resume."""
    return [o.input_line for o in parsed([a for a in overrides if is_task_override(a)])
            if o.key_or_group not in NOT_REPLAYED]


def merge(recorded: list[str], given: list[str]) -> list[str]:
    """The run's recorded overrides with the command line's on top, one per key (the command line wins), in
    forms that Hydra accepts together: a recorded `+key=1` changed by `key=2` stays an addition (`+key=2`),
    `~key` of a recorded `+key` drops both, and `+key` of a recorded `~key` changes it back."""
    merged: dict[tuple[str, str | None], str] = {}  # in order of first appearance
    for override in parsed(recorded):  # a key given twice keeps its place; the last value counts, as in Hydra
        merged[identity(override)] = override.input_line
    before = {key: parsed([line])[0] for key, line in merged.items()}
    for override in parsed(given):
        key, old, line = identity(override), before.get(identity(override)), override.input_line
        if old is not None and (old.is_add() or old.is_force_add()):
            if override.is_delete():
                merged.pop(key, None)  # the key exists only by the recorded addition
                continue
            if not (override.is_add() or override.is_force_add()):
                line = ("++" if old.is_force_add() else "+") + line
        elif old is not None and old.is_delete() and override.is_add():
            line = line.lstrip("+")
        merged[key] = line
    return list(merged.values())


def read_record(run_dir: Path) -> tuple[list[str], str | None] | None:
    """The run's overrides and project folder: its resume.yaml; for a run of dltrain 0.1.0, Hydra's record of its
    first launch; None when the folder holds neither (a run with hydra.output_subdir=null, or from the API)."""
    path = run_dir / RECORD
    if path.is_file():
        try:
            record = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path} is not readable ({type(err).__name__}); it is rewritten by each resume: "
                              "restore it, or delete it to resume with the first launch's overrides") from None
        overrides, project = (record or {}).get("overrides"), (record or {}).get("project")
        check(isinstance(record, dict) and isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)
              and isinstance(project, (str, type(None))), f"{path} is damaged (want overrides: a list of KEY=VALUE "
              "and project: a folder or null): restore it, or delete it to resume with the first launch's overrides")
        try:
            parsed(overrides)
        except Exception as err:  # noqa: BLE001  (Hydra's grammar errors)
            raise ConfigError(f"{path} holds an override that does not parse ({type(err).__name__}): restore it, "
                              "or delete it to resume with the first launch's overrides") from None
        return overrides, project
    hydra_dir = run_dir / ".hydra"
    if not (hydra_dir / "overrides.yaml").is_file():
        return None
    try:
        overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
        searchpath = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]["searchpath"] or []
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise ConfigError(f"{hydra_dir} is damaged ({type(err).__name__}: {err}); resume with the run's overrides "
                          f"given again and hydra.output_subdir=null") from None
    project = str(Path(searchpath[0].removeprefix("file://")).parent) if searchpath else None
    return replayable([str(o) for o in overrides]), project


def record(run_dir: Path, overrides: list[str], project: str | None) -> None:
    """Write the run's effective overrides (what it was launched or resumed with, last) and project folder."""
    from dltrain.core.files import write_text_atomic

    text = yaml.safe_dump({"overrides": replayable(overrides), "project": project}, sort_keys=False)
    write_text_atomic(run_dir / RECORD, text)


def project_problem(run_dir: Path, trained_in: str | None, here: str | None, named: bool) -> str | None:
    """A run resumes in the project it was trained in: code is imported only from the project the user runs in or
    names, and another project's (or no project's) conf/ would compose another config."""
    if named or trained_in == here or (trained_in and here and Path(trained_in).resolve() == Path(here).resolve()):
        return None
    where = run_dir.resolve()
    if trained_in:
        return (f"the run {where} was trained in the project {trained_in}: resume it from that folder "
                f"(cd {shlex.quote(trained_in)} && dltrain trainer.resume={where}), or add --config-dir "
                f"{Path(trained_in) / 'conf'}")
    return (f"the run {where} was trained outside any project, and this folder is the project {here}, whose conf/ "
            f"would change its config: resume it from another folder (e.g. cd {shlex.quote(str(where))})")


def replay(args: list[str], run_dir: Path, hydra_args: list[str], named: bool, project: Path | None) -> list[str]:
    """The command line of a resume into `run_dir`: the run's recorded overrides with the given ones on top, then
    Hydra's overrides (the given ones and `hydra_args`), then flags (`--cfg job`) with their values. `project`: the
    project the command runs in, `named`: with --config-dir or hydra.searchpath."""
    found = read_record(run_dir)
    given = [a for a in args if is_task_override(a)]
    hydra_given = [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~")) and a not in given]
    flags = [a for a in args if a not in given and a not in hydra_given]
    if found is None:
        return [*given, *hydra_given, *hydra_args, *flags]
    recorded, trained_in = found
    problem = project_problem(run_dir, trained_in, str(project) if project else None, named)
    check(problem is None, problem or "")
    code = [o.input_line for o in parsed(recorded) if o.key_or_group == "plugins"]
    if code and not any(o.key_or_group == "plugins" for o in parsed(given)):
        raise ConfigError(f"the run {run_dir} was launched with {code[-1]}; code is never imported because a run "
                          f"folder names it: give {code[-1]} again to resume")
    return [*merge(recorded, given), *hydra_given, *hydra_args, *flags]


def flat(tree: Any, at: str = "") -> dict[str, str]:
    """A config's leaves as KEY -> value text (`optim.lr` -> `0.1`, lists as JSON)."""
    if isinstance(tree, dict):
        return {k: v for name, sub in tree.items() for k, v in flat(sub, f"{at}.{name}" if at else name).items()}
    return {at: tree if isinstance(tree, str) else json.dumps(tree, separators=(",", ":"))}


def changes(saved: dict[str, Any], resolved: dict[str, Any]) -> str | None:
    """One line naming every setting of `resolved` that differs from the checkpoint's config `saved`."""
    old, new = flat(saved), flat(resolved)
    keys = [k for k in dict.fromkeys([*old, *new]) if k not in NOT_REPLAYED and old.get(k) != new.get(k)
            and k in old and not new_default(k, old[k], new.get(k))]  # a key a later release added is no change
    if not keys:
        return None
    shown = ", ".join(f"{k} {old.get(k, '(absent)')} -> {new.get(k, '(absent)')}" for k in keys)
    return f"changed for this resume: {shown}"


def new_default(key: str, old: Any, new: Any) -> bool:
    """A value that only a later release's default changed: early_stopping.mode `auto` (0.1.0's default was `min`,
    which `auto` resolves to for every loss; the run's checkpoint keeps the mode it resolved)."""
    return key.endswith("early_stopping.mode") and new == "auto" and old in ("min", "max")


def settings_advice(saved: dict[str, Any], config: dict[str, Any]) -> str:
    """Which of the model/data/task settings that a resume cannot change differ from the checkpoint's config (a
    shape mismatch alone does not say which)."""
    theirs = yaml.safe_load(saved.get("config") or "{}") or {}
    old, new = flat({g: theirs.get(g, {}) for g in ("model", "data", "task")}), \
        flat({g: config.get(g, {}) for g in ("model", "data", "task")})
    differ = [f"{key}={old[key]} (here {new.get(key, 'absent')})" for key in old if old[key] != new.get(key)]
    if not differ:
        return "resume with the run's own model settings"
    return (f"the run was trained with {', '.join(differ)}, which cannot change mid-run: resume without "
            "overriding them (trainer.resume=DIR alone takes the run's own)")


def command(run_dir: Path) -> str:
    """The shell command that resumes `run_dir` as it is: its path quoted for Hydra's grammar where needed (a
    sweep job's folder, `optim.lr=0.05`) and for the shell; --config-dir when the run's project is not the
    working directory's (it was named with --config-dir)."""
    from dltrain.core.env import project
    from dltrain.run.overrides import override_value, quoted
    from dltrain.run.plugins import project_root

    value = str(run_dir)
    try:
        plain = override_value(f"trainer.resume={value}") == value
    except Exception:  # noqa: BLE001  (Hydra's grammar refuses it unquoted)
        plain = False
    words = ["dltrain"]
    here = project()  # the command's project: this process's, or the one the CLI handed its launcher's processes
    if here and project_root([]) != here:
        words += ["--config-dir", str(here / "conf")]
    words.append(f"trainer.resume={value if plain else quoted(value)}")
    return " ".join(shlex.quote(word) for word in words)
