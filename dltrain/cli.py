"""The `dltrain` command. Named sub-commands (board, runs, ...) go to typer; anything else (overrides such as
`model=cnn`, `-m` sweeps, Hydra's own flags) goes to Hydra's entry point, which owns run directories and
multirun. The first argument decides. Nothing here imports torch before it is needed.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

SUBCOMMANDS = ("board", "runs", "eval", "export", "generate")
HELP_FLAGS = ("-h", "--help")
FAILED_JOBS_FILE = "DLTRAIN_FAILED_JOBS"  # env var: a file where jobs, in any launcher process, list failures


def main() -> None:
    args = sys.argv[1:]
    if args and (args[0] in SUBCOMMANDS or args[0] in HELP_FLAGS):
        from dltrain.commands import app

        app(prog_name="dltrain")
    else:
        run_hydra(args)


def resume_into_same_dir(args: list[str]) -> list[str]:
    """`trainer.resume=DIR` continues in DIR itself (same run folder, same TensorBoard run)."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    resume = [a.split("=", 1)[1] for a in args if a.startswith("trainer.resume=")]
    if multirun or not resume or resume[-1] in ("null", "") or any(a.startswith("hydra.run.dir=") for a in args):
        return args
    target = Path(resume[-1]).expanduser()
    if not (target / "last.pt").is_file() and not target.is_file():
        print(f"dltrain: error: no checkpoint at {target}; give a run directory that holds last.pt, or a .pt file",
              file=sys.stderr)
        sys.exit(2)  # before Hydra makes a run directory there
    run_dir = target if target.is_dir() else target.parent
    return [*args, f"hydra.run.dir='{run_dir}'"]


def under_torchrun(args: list[str]) -> list[str]:
    """Under an external torchrun every rank runs Hydra: give them one shared run directory (named by the
    rendezvous id, the same on all ranks) and let only rank 0 write Hydra's files."""
    import os

    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return []
    if run_id == "none":  # torchrun's default id: the local ranks' shared parent (the agent) tells launches apart
        run_id = f"{os.environ.get('MASTER_PORT', '')}-{os.getppid()}"
    extra = [] if any(a.startswith("hydra.run.dir=") for a in args) else [f"hydra.run.dir=outputs/torchrun-{run_id}"]
    if os.environ.get("RANK", "0") != "0":
        extra += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    return extra


def run_hydra(args: list[str]) -> None:
    import hydra

    from dltrain.conf_dirs import config_dir

    multirun = any(a in ("-m", "--multirun") for a in args)
    others = [a for a in args if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in others):  # --cfg, --info, ...: Hydra reports their problems itself
        problem = None
    else:
        problem = stray_word(others) or (check_sweep(others) if multirun else check_overrides(others))
    if problem:
        print(f"dltrain: error: {problem}", file=sys.stderr)
        sys.exit(2)
    args = resume_into_same_dir(args)
    sys.argv = [sys.argv[0], *args, *under_torchrun(args)]
    import os
    import tempfile

    with tempfile.NamedTemporaryFile("r", prefix="dltrain-failed-", suffix=".txt") as failures:
        os.environ[FAILED_JOBS_FILE] = failures.name
        hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(hydra_job)()
        failed = failures.read().splitlines()
    if failed:  # the sweep carried on; the exit code says that some jobs failed
        print(f"dltrain: {len(failed)} job(s) failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def stray_word(args: list[str]) -> str | None:
    """A bare word that is no override (a mistyped sub-command, say)."""
    word = next((a for a in args if "=" not in a and not a.startswith("~")), None)
    if word is None:
        return None
    return f"'{word}' is neither a sub-command ({', '.join(SUBCOMMANDS)}) nor an override KEY=VALUE; see dltrain --help"


def check_sweep(args: list[str]) -> str | None:
    """Compose every value of every swept key once (the other keys at their first value): an unknown choice
    or key in a sweep is one line too. Bad values still fail their own job only. Intervals (Optuna) are
    not listed, so they are left to the sweeper."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from dltrain.registry import first_line

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        return first_line(err)
    choices = []
    for override in parsed:
        key = override.input_line.split("=", 1)[0]
        if not override.is_sweep_override():
            choices.append([override.input_line])
        elif override.is_discrete_sweep():
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
    for i, values in enumerate(choices):
        for value in values[1:] if i else values:  # the first point checks every key's first value
            problem = check_overrides([v[0] for v in choices[:i]] + [value] + [v[0] for v in choices[i + 1:]])
            if problem:
                return problem
    return None


def check_overrides(args: list[str]) -> str | None:
    """Compose once up front so an unknown choice or key is one line (Hydra's own report spans many)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf import DictConfig, OmegaConf

    from dltrain.conf_dirs import config_dir
    from dltrain.registry import first_line

    overrides = [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            compose("config", overrides=overrides)
        except MissingConfigException as err:
            group, _, choice = (err.missing_cfg_file or "").rpartition("/")
            return f"unknown {group} '{choice}'; valid: {', '.join(err.options or [])}"
        except ConfigCompositionException as err:
            bad = next((o for o in overrides if f"'{o.split('=')[0]}'" in str(err)), None)
            if bad is None:
                return first_line(err)
            key = bad.split("=")[0]
            parent, _, leaf = key.rpartition(".")
            node = compose("config", overrides=[o for o in overrides if o != bad])
            found = OmegaConf.select(node, parent) if parent else node
            if not isinstance(found, DictConfig):
                return first_line(err)
            if leaf in found or len(found) == 0:  # a free-form mapping such as model.init_args: Hydra's "use +key"
                return " ".join(str(err).split())
            where = f"{parent}={found.name}" if "name" in found else (parent or "the config")
            return f"{key} is not an option of {where}; valid: {', '.join(str(k) for k in found if k != 'name')}"
        except HydraException as err:
            return first_line(err)
    return None


def hydra_job(cfg: Any) -> Any:
    """The function Hydra calls once per job (once per sweep point with -m)."""
    import json

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dltrain.registry import ConfigError

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    done = run_dir / "metrics.json"
    finished = json.loads(done.read_text()) if multirun and done.is_file() else {}
    if finished.get("status") == "completed":
        print(f"dltrain: {run_dir} already finished; skipped")  # re-running a sweep resumes it
        return math.nan if finished.get("best") is None else finished["best"]
    try:
        from dltrain.config import RunConfig, to_plain
        from dltrain.train import run_job

        report = run_job(RunConfig.parse(to_plain(cfg)), run_dir, overrides)
        best = report["best"]  # the monitored metric's best value: what Hydra's Optuna sweeper optimizes
        return math.nan if best is None else best
    except ConfigError as err:
        return job_failed([f"error: {problem}" for problem in err.problems], run_dir, overrides, multirun, code=2)
    except Exception as err:  # noqa: BLE001  (a crashed trial must not kill the sweep)
        if not multirun and not is_worker_failure(err):
            raise
        return job_failed([f"error: {one_line(err)}"], run_dir, overrides, multirun, code=1)


def is_worker_failure(err: BaseException) -> bool:
    return type(err).__name__ == "ChildFailedError"


def one_line(err: BaseException) -> str:
    if is_worker_failure(err):
        failures = getattr(err, "failures", {})
        ranks = ", ".join(f"rank {f.local_rank} exit code {f.exitcode}" for f in failures.values())
        return f"a DDP worker failed ({ranks}); the run was stopped, see the worker's output above"
    from dltrain.registry import first_line

    return f"{type(err).__name__}: {first_line(err)}"


def remove_if_empty(run_dir: Path) -> None:
    """A run rejected before training leaves no folder that holds only Hydra's own files."""
    import shutil

    log = run_dir / "dltrain.log"
    if not run_dir.is_dir():
        return
    only_hydra = {p.name for p in run_dir.iterdir()} <= {".hydra", "dltrain.log"}
    if only_hydra and (not log.exists() or log.stat().st_size == 0):
        shutil.rmtree(run_dir, ignore_errors=True)


def job_failed(messages: list[str], run_dir: Path, overrides: list[str], multirun: bool, code: int) -> float:
    """Print one line per problem; in a sweep record the failure in the job's metrics.json and carry on."""
    import json

    for message in messages:
        print(f"dltrain: {message}", file=sys.stderr, flush=True)
    if not multirun:
        remove_if_empty(run_dir)
        sys.exit(code)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "failed", "error": "; ".join(messages),
                                                      "overrides": overrides}, indent=2) + "\n")
    import os

    with open(os.environ[FAILED_JOBS_FILE], "a") as failures:
        failures.write((",".join(overrides) or str(run_dir)) + "\n")
    return math.nan
