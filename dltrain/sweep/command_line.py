"""The command line of a run or a sweep (`dltrain OVERRIDES`, `dltrain -m ...`), read once by cli/main.py into one
object that goes down by argument: to the up-front checks, to the sweep's plan, and, by closure, to the function
Hydra calls for each job (sweep/jobs.py `job_function`). --config-dir is read here, once; a sweep's points are
composed once (run/points.py) and reused by the checks, the plan and its HParams columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltrain.run.plugins import config_dir_arg, root_of
from dltrain.run.points import Points

MULTIRUN_FLAGS = ("-m", "--multirun")


@dataclass
class SweepPlan:
    """A sweep's plan (sweep/plan.py), made in the sweep's own process before the first job."""

    root: Path | None  # the sweep folder, fixed before Hydra starts (None: it could not be resolved here)
    swept: dict[str, list[str]]  # swept key -> its values as listed ([] for an interval: the sweeper picks)
    single: list[str]  # keys given one value: left out of the job names
    jobs: int | None  # how many jobs Hydra's basic sweeper will run (None: another sweeper decides)
    width: int  # the longest job name, for aligned per-job lines
    hydra_args: list[str] = field(default_factory=list)  # extra overrides for Hydra (sweep dir, job names, logs)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {values|interval, differs}
    metrics: list[list[str]] = field(default_factory=list)  # [tag, display name] per HParams metric column

    def for_jobs(self) -> dict[str, Any]:
        """What each job needs of the plan: the sweep folder, the job count, the width of a job's name, and the
        metrics its line shows."""
        shown = {"monitor": self.metrics[0][1].removeprefix("best/"), "test": self.metrics[1][1]} if self.metrics else {}
        return {"root": str(self.root) if self.root else None, "jobs": self.jobs, "width": self.width, **shown}


@dataclass
class CommandLine:
    given: list[str]  # the arguments as typed, without the program's name
    multirun: bool  # -m / --multirun
    config_dir: tuple[str, str] | None  # --config-dir/-cd as typed (the flag, its value), None when not given
    project: Path | None  # the project's root (the folder that holds its conf/); None: dltrain's own configs only
    rest: list[str]  # the other arguments (overrides, Hydra's flags), -m and --config-dir taken out
    points: Points | None = None  # a sweep's configs, composed once
    sweep: SweepPlan | None = None  # a sweep's plan (None: a single run, or a sweep only Hydra can expand)

    @classmethod
    def read(cls, args: list[str]) -> CommandLine:
        config_dir, rest = config_dir_arg([a for a in args if a not in MULTIRUN_FLAGS])
        root = root_of(config_dir[1] if config_dir else None, rest)
        return cls(list(args), any(a in MULTIRUN_FLAGS for a in args), config_dir, root, rest)

    @property
    def named_project(self) -> bool:
        """The project was named (--config-dir or hydra.searchpath), not found in the working directory."""
        return self.config_dir is not None or any(a.startswith("hydra.searchpath=") for a in self.rest)

    @property
    def conf(self) -> Path | None:
        """The project's conf/ folder that joins Hydra's search path."""
        if self.config_dir and self.config_dir[1]:
            return Path(self.config_dir[1]).expanduser().resolve()
        return self.project / "conf" if self.project else None

    @property
    def flags(self) -> list[str]:
        return ["-m"] if self.multirun else []

    @property
    def overrides_only(self) -> bool:
        """No Hydra flag (--cfg, --info, ...) among the arguments: the up-front checks and the sweep's plan apply."""
        return not any(a.startswith("-") for a in self.rest)

    def hydra_args(self) -> list[str]:
        """What Hydra's own entry point reads: -m first (it reads it nowhere else), the overrides, the sweep's own."""
        return [*self.flags, *self.rest, *(self.sweep.hydra_args if self.sweep else [])]


@dataclass(frozen=True)
class JobContext:
    """What each job needs of the command line, pickled with the job function into a launcher's processes."""

    project: Path | None = None
    sweep: dict[str, Any] = field(default_factory=dict)  # SweepPlan.for_jobs() ({}: a single run)
    command: tuple[str, ...] = ()  # the arguments as typed (a vectorised sweep's line that continues it)
