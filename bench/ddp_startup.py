"""Where the seconds of a `trainer.devices=2` run go on CPU: interpreter and imports, the elastic launch (spawn,
rendezvous, the agent's monitoring, teardown), joining the gloo group, and the run itself against one process.

    .venv/bin/python bench/ddp_startup.py [--repeats 3] [--epochs 1]

Each part is timed as its own command (medians of --repeats, wall seconds), so the parts add up only roughly;
the two last rows are the whole `dltrain` commands whose difference is the cost of DDP on this machine.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dltrain from this checkout
DLTRAIN = str(Path(sys.executable).parent / "dltrain")

def nothing(join: bool) -> None:
    """A worker that only starts (imports torch and dltrain), and with `join` also joins the gloo group."""
    if join:
        import torch.distributed as torch_dist

        torch_dist.init_process_group("gloo")
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def launch_only(join: bool) -> None:
    from dltrain.core import dist

    dist.launch(2, nothing, join)


def timed(command: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def parts(epochs: int) -> dict[str, list[str]]:
    run = ["data=digits", "model=mlp", f"trainer.max_epochs={epochs}", "trainer.log_every_n_steps=0",
           "early_stopping=none"]
    return {
        "python -c pass": [PYTHON, "-c", "pass"],
        "import torch": [PYTHON, "-c", "import torch"],
        "import what a worker runs (dltrain.run.train)": [PYTHON, "-c", "import dltrain.run.train"],
        "launch 2 workers that do nothing": [PYTHON, __file__, "--launch-only", "0"],
        "launch 2 workers that join a gloo group": [PYTHON, __file__, "--launch-only", "1"],
        f"dltrain, 1 process, {epochs} epoch(s)": [DLTRAIN, *run, "hydra.run.dir=one"],
        f"dltrain trainer.devices=2, {epochs} epoch(s)": [DLTRAIN, *run, "trainer.devices=2", "hydra.run.dir=two"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--launch-only", type=int, choices=[0, 1], help=argparse.SUPPRESS)  # one timed part
    args = parser.parse_args()
    if args.launch_only is not None:
        return launch_only(bool(args.launch_only))
    seconds: dict[str, list[float]] = {name: [] for name in parts(args.epochs)}
    for _ in range(args.repeats):  # interleaved, so load changes hit every part alike
        for name, command in parts(args.epochs).items():
            with tempfile.TemporaryDirectory() as cwd:
                seconds[name].append(timed(command, cwd))
    print(f"| part | median s | range s |  ({args.repeats} repeats)\n|---|---|---|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |")


if __name__ == "__main__":
    main()
