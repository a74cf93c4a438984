"""Processes that an external launcher started as one DDP group (torchrun, or SLURM's tasks: srun, sbatch --ntasks,
submitit's tasks_per_node/nodes): SLURM's variables turned into torchrun's, the run directory all ranks share
(named by the launch's id), what a re-run with the same id does, and no folder left by ranks that write nothing.
`cli.under_torchrun` calls `shared_run_args` before Hydra picks the run directory. No torch import here.
"""
from __future__ import annotations

import atexit
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path

from dltrain.core import env as process_env
from dltrain.core.env import SLURM_GROUP as SLURM_FLAG
from dltrain.core.env import TORCHRUN_VARIABLES


def slurm_tasks(env: MutableMapping[str, str]) -> int:
    """The tasks of this job step (srun's count; SLURM_NTASKS where the step does not say)."""
    return int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1")


def slurm_group(env: MutableMapping[str, str] | None = None) -> bool:
    """SLURM started several tasks of this step. An `salloc` shell (a job id, no step) or one task is no group, and
    neither is a process that torchrun (or the user) already gave a rank. `env`: this process's environment."""
    if env is None:
        return process_env.on_environment(slurm_group)
    if env.get(SLURM_FLAG) == "1":
        return True
    if any(name in env for name in TORCHRUN_VARIABLES):
        return False
    return slurm_tasks(env) > 1 and "SLURM_STEP_ID" in env and "SLURM_PROCID" in env


def adopt_slurm(env: MutableMapping[str, str] | None = None) -> bool:
    """Give SLURM's tasks the variables torchrun gives its processes, as Lightning's SLURMEnvironment does; a
    MASTER_ADDR or MASTER_PORT already set is kept. Returns whether this process is one of such tasks."""
    if env is None:
        return process_env.on_environment(adopt_slurm)
    if not slurm_group(env):
        return False
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    env.update(RANK=env["SLURM_PROCID"], WORLD_SIZE=str(slurm_tasks(env)), LOCAL_RANK=env.get("SLURM_LOCALID", "0"),
               LOCAL_WORLD_SIZE=str(tasks_on_this_node(env)))
    env.setdefault("MASTER_ADDR", first_host(nodes) or "127.0.0.1")
    env.setdefault("MASTER_PORT", str(slurm_port(env)))
    env[SLURM_FLAG] = "1"
    return True


def adopt_submitit_local(env: MutableMapping[str, str] | None = None) -> bool:
    """The same for the tasks of submitit's local executor (`hydra/launcher=submitit_local` with
    `hydra.launcher.tasks_per_node=N`, the local twin of a multi-task SLURM job): one group on this machine."""
    if env is None:
        return process_env.on_environment(adopt_submitit_local)
    tasks = int(env.get("SUBMITIT_LOCAL_NTASKS") or "1")
    if tasks <= 1 or "SUBMITIT_LOCAL_GLOBALID" not in env or any(name in env for name in TORCHRUN_VARIABLES):
        return False
    env.update(RANK=env["SUBMITIT_LOCAL_GLOBALID"], WORLD_SIZE=str(tasks), LOCAL_RANK=env["SUBMITIT_LOCAL_LOCALID"],
               LOCAL_WORLD_SIZE=str(tasks))
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(10000 + int(env.get("SUBMITIT_LOCAL_JOB_ID") or "0") % 20000))  # the job's pid
    return True


def adopt_launcher_tasks() -> bool:
    """In a sweep job that a launcher started as several tasks (submitit on SLURM, or locally): one DDP group."""
    return adopt_slurm() or adopt_submitit_local()


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list, compact forms included: `node[01-03,07],gpu5` -> `node01`,
    `rack[1-2]-n[4,6]` -> `rack1-n4`."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]  # commas inside brackets do not separate hosts
    return re.sub(r"\[([^\]\-,]*)[^\]]*\]", r"\1", first)  # each bracket: its first value


def slurm_port(env: MutableMapping[str, str]) -> int:
    """The same port in every task of a step, from the job and step ids: 10000-29999, below Linux's ephemeral
    ports (32768+); steps 0-9 of one job differ, as do jobs unless their ids differ by a multiple of 2000."""
    job, step = env.get("SLURM_JOB_ID", "0"), env.get("SLURM_STEP_ID", "0")
    return 10000 + (int(job) * 10 + (int(step) if step.isdigit() else 0)) % 20000


def tasks_on_this_node(env: MutableMapping[str, str]) -> int:
    """This node's share of the step's tasks, from SLURM's `2(x3),1` form (tasks per node, in node order)."""
    counts: list[int] = []
    for item in (env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "1").split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if match:
            counts += [int(match.group(1))] * int(match.group(2) or 1)
    node = int(env.get("SLURM_NODEID", "0"))
    return counts[node] if node < len(counts) else 1


def shared_run_args(args: list[str]) -> list[str]:
    """Hydra overrides for one rank of an externally launched group: one run directory for all ranks, named by the
    launch (a re-run of the same id resumes an interrupted run and refuses a finished one); only rank 0 writes
    Hydra's files, and the other ranks leave no folder behind."""
    from dltrain.run.overrides import override_value, quoted

    adopt_slurm()
    name = process_env.launch_name()
    if name is None or not process_env.launched_externally() or any(a in ("-m", "--multirun") for a in args):
        return []
    given = [override_value(a) for a in args if a.startswith("hydra.run.dir=")]
    extra = [] if given else [f"hydra.run.dir={quoted(str(Path('outputs') / name))}"]
    run_dir = Path(str(given[-1])) if given else Path("outputs") / name
    if not given and not any(a.startswith("trainer.resume=") for a in args):
        extra += rerun_args(run_dir, name)
    if not process_env.is_rank0():
        # no log file either: the root config's `handlers.file.delay` would be a handler without a class there
        extra += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "~hydra.job_logging.handlers",
                  "hydra/hydra_logging=disabled"]
        leave_no_folder(run_dir)
    return extra


def rerun_args(run_dir: Path, name: str) -> list[str]:
    """A launch whose id was used before: an interrupted run (last.pt, not finished) is resumed, with one line
    saying so; a finished one is refused with one line (exit 2), never overwritten."""
    from dltrain.core import metrics_file
    from dltrain.run.overrides import quoted

    main = process_env.is_rank0()
    if metrics_file.status_of(metrics_file.read(run_dir)) in metrics_file.ENDED_OK:
        if main:
            print(f"dltrain: error: {run_dir} already holds a finished run of {name}; launch with a new id (torchrun "
                  f"--rdzv-id, a new SLURM job), or train it further with: dltrain trainer.resume={run_dir} "
                  f"trainer.max_epochs=<more>", file=sys.stderr)
        sys.exit(2)
    if not (run_dir / "last.pt").is_file():
        return []
    if main:
        print(f"dltrain: {run_dir} holds an interrupted run of {name}; resuming it (trainer.resume={run_dir})",
              file=sys.stderr, flush=True)
    return [f"trainer.resume={quoted(str(run_dir))}"]


def leave_no_folder(run_dir: Path) -> None:
    """Hydra makes the run directory in every process (hydra.output_subdir=null only skips .hydra/), and run_job
    does too; a rank that writes nothing removes the folders it made, if still empty, when it exits. On another
    node than rank 0's (no shared file system) they would otherwise stay behind, empty."""
    made = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]  # deepest first
    if made:
        atexit.register(remove_empty, made)


def remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (rank 0 of this node writes there), or gone
            return
