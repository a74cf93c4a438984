"""The vectorised launcher against Hydra's basic one (issue 21), measured in one run on one machine.

Two parts, each a ratio against a reference measured in the same run:

`loop`: the training loop alone. N members of the default digits run (or another case), opened as the launcher
opens them (run/train.py open_run), trained E epochs as one stack (core/stack_engine.py train_epoch + evaluate on
the val split) against the same N runs trained one after another in this process by the ordinary engine
(core/engine.py train_epoch + evaluate; each run's E epochs in a row), no callbacks, no files; twice each, in the
order stacked, one-at-a-time, one-at-a-time, stacked. Reported: member-epochs per second of each, and
their ratio (the issue's gate: >= 4 at N = 16 on the digits MLP).

`sweep`: end to end, the `dltrain -m ...` command a user types, once with the basic launcher and once with
`hydra/launcher=vectorized`, each in a fresh folder; wall time from the command's start to its exit, and where it
went: training (the runs' train_seconds; for a stack, its epochs' time, shared by its members), the rest of the
jobs' own time (set-up, evaluation, test, checkpoints, logging: wall_seconds - train_seconds; for a stack, from
its start to its last member's end), and outside the jobs (interpreter start-up, the door's composition of the
points, planning, Hydra's set-up of each job, the end table: wall - the jobs' time).

    OMP_NUM_THREADS=1 .venv/bin/python bench/vectorized.py loop --members 1 4 16 64
    OMP_NUM_THREADS=1 .venv/bin/python bench/vectorized.py sweep --members 1 4 16 64
    OMP_NUM_THREADS=1 .venv/bin/python bench/vectorized.py seeds     # 8 seeds vectorised against one plain run

`seeds`: one plain `dltrain` (the default digits run) against `dltrain -m trainer.seed=0,...,7
hydra/launcher=vectorized`, wall seconds of each command.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

CASES = {  # name -> (overrides of the default run, epochs for the end-to-end sweep)
    "digits_mlp": ([], 20),
    "mnist_mlp": (["data=mnist", "model.hidden=[512,256]", "data.batch_size=128"], 3),
    "digits_lenet": (["model=cnn"], 5),
}


def configs(case: str, n: int, epochs: int, decays: tuple[float, ...] = (0, 1e-4)) -> list[list[str]]:
    """N points of an lr x weight-decay grid (the issue's sweeps): log-spaced lrs from 0.003 to 0.3, each with
    every weight decay in `decays` (one value: an lr sweep)."""
    count = max(n // len(decays), 1)
    lrs = [0.003 * (100 ** (i / max(count - 1, 1))) for i in range(count)]
    points = [[f"optim.lr={lr:.4g}", f"optim.weight_decay={wd}"] for lr in lrs for wd in decays][:n]
    return [[*CASES[case][0], f"trainer.max_epochs={epochs}", "trainer.log_every_n_steps=0", *p] for p in points]


def compose(overrides: list[str]) -> dict[str, Any]:
    """The resolved config of `dltrain OVERRIDES`, as plain data (Hydra's compose over dltrain's conf/)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dltrain.core.conf_dirs import config_dir
    from dltrain.run.config import to_plain

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_plain(hydra_compose("config", overrides=list(overrides)))


def open_runs(case: str, n: int, epochs: int, root: Path) -> list[Any]:
    """N members opened as the launcher opens them (assembled, config.yaml written), on the CPU."""
    from dltrain.run.config import RunConfig
    from dltrain.run.train import open_run

    runs = []
    for i, overrides in enumerate(configs(case, n, epochs, decays=(0,))):  # the loop: an lr sweep
        folder = root / f"{n}-{i}"
        folder.mkdir(parents=True)
        with contextlib.redirect_stdout(io.StringIO()):
            runs.append(open_run(RunConfig.parse(compose(overrides)), folder, torch.device("cpu"), overrides))
    return runs


def loop_side(case: str, n: int, epochs: int, root: Path) -> dict[str, float]:
    """Seconds of 2 x `epochs` epochs of N members, training and validation timed apart: stacked, and one member
    after another with the ordinary engine (each member's epochs in a row, as the basic launcher trains them), in
    blocks ordered stacked, alone, alone, stacked."""
    from dltrain.core import engine
    from dltrain.core.stack_engine import evaluate as stack_evaluate
    from dltrain.core.stack_engine import train_epoch as stack_epoch
    from dltrain.run.stack_build import build_stack, epoch_lrs

    runs = open_runs(case, n, epochs + 1, root / "stacked")
    stack = build_stack(runs)
    alone = open_runs(case, n, epochs + 1, root / "alone")
    torch.set_num_threads(1)

    def stacked_train(e: int) -> None:
        lrs = epoch_lrs(runs, stack.steps_per_epoch, stack.device)
        sums, _ = stack_epoch(stack.model, stack.optimizer, stack.task, stack.train, stack.settings, [e] * n, lrs,
                              stack.active)
        sums.tolist()  # the epoch's one host read, as the launcher's

    def stacked_val(e: int) -> None:
        stack_evaluate(stack.model, stack.task, stack.val, stack.settings.batch_size, None).tolist()

    def alone_train(run: Any, e: int) -> None:
        engine.set_lr(run.state.optimizer, run.settings.lr_at(e), run.settings.lr_scales)
        engine.train_epoch(run.state, run.parts.task, run.splits[0], run.settings, [])

    def alone_val(run: Any, e: int) -> None:
        engine.evaluate(run.state.model, run.parts.task, run.splits[1], run.settings.batch_size, "val")

    times = dict.fromkeys(("stacked_train", "stacked_val", "alone_train", "alone_val"), 0.0)

    def timed(name: str, fn: Any, *args: Any) -> None:
        started = time.perf_counter()
        fn(*args)
        times[name] += time.perf_counter() - started

    def stacked_block() -> None:  # the stack's epochs one after another, as the launcher trains them
        for e in range(epochs):
            timed("stacked_train", stacked_train, e)
            timed("stacked_val", stacked_val, e)

    def alone_block() -> None:  # each run's epochs one after another, then the next run: the basic launcher's order
        for run in alone:
            for e in range(epochs):
                timed("alone_train", alone_train, run, e)
                timed("alone_val", alone_val, run, e)

    stacked_train(0)
    for run in alone:
        alone_train(run, 0)  # warm-up epochs, not timed
    for block in (stacked_block, alone_block, alone_block, stacked_block):  # ABBA: drift and order cancel
        block()
    epochs *= 2  # two blocks each
    member_epochs = n * epochs
    return {"n": n, **{f"{k}_s": round(v, 4) for k, v in times.items()},
            "train_ratio": times["alone_train"] / times["stacked_train"],
            "train_val_ratio": (times["alone_train"] + times["alone_val"]) / (times["stacked_train"]
                                                                             + times["stacked_val"]),
            "stacked_member_epochs_per_s": member_epochs / times["stacked_train"],
            "alone_member_epochs_per_s": member_epochs / times["alone_train"]}


def sweep_side(case: str, n: int, vectorized: bool, root: Path) -> dict[str, Any]:
    """One `dltrain -m` sweep of N points, timed from the command's start to its exit, and its breakdown."""
    points = configs(case, n, CASES[case][1])
    swept = sweep_overrides(points)
    folder = root / f"{case}-{n}-{'vectorized' if vectorized else 'basic'}"
    args = [*swept, f"hydra.sweep.dir={folder}"] + (["hydra/launcher=vectorized"] if vectorized else [])
    exe = Path(sys.executable).parent / "dltrain"
    started = time.perf_counter()
    done = subprocess.run([str(exe), "-m", *args], capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    reports = [json.loads(p.read_text()) for p in folder.glob("*/metrics.json")]
    assert len(reports) == n, (len(reports), n)
    # the jobs' own time: summed over jobs in turn; a stack's is its longest member's (they count from its start)
    jobs = max(r["wall_seconds"] for r in reports) if vectorized else sum(r["wall_seconds"] for r in reports)
    training = stack_training(reports) if vectorized else sum(r["train_seconds"] for r in reports)
    return {"n": n, "launcher": "vectorized" if vectorized else "basic", "wall_s": round(wall, 2),
            "training_s": round(training, 2), "in_jobs_other_s": round(jobs - training, 2),
            "outside_jobs_s": round(wall - jobs, 2)}


def seeds_side(root: Path, seeds: int = 8) -> dict[str, Any]:
    """One plain `dltrain` run against `seeds` seeds of it as a vectorised sweep: wall seconds of each command."""
    exe = str(Path(sys.executable).parent / "dltrain")
    commands = {"one_run": [exe, f"hydra.run.dir={root / 'one'}"],
                "seeds_vectorized": [exe, "-m", f"trainer.seed={','.join(map(str, range(seeds)))}",
                                     "hydra/launcher=vectorized", f"hydra.sweep.dir={root / 'seeds'}"]}
    walls = {}
    for name, command in commands.items():
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=root)
        walls[name] = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
    return {"seeds": seeds, **{f"{k}_s": round(v, 2) for k, v in walls.items()},
            "ratio": walls["seeds_vectorized"] / walls["one_run"]}


def stack_training(reports: list[dict[str, Any]]) -> float:
    """A stack's training time: its members share each epoch's seconds, so the longest member's is the stack's."""
    return max(r["train_seconds"] for r in reports)


def sweep_overrides(points: list[list[str]]) -> list[str]:
    """The points as one Hydra sweep: the keys that vary with their values joined by commas."""
    keys: dict[str, list[str]] = {}
    for p in points:
        for item in p:
            key, value = item.split("=", 1)
            keys.setdefault(key, [])
            if value not in keys[key]:
                keys[key].append(value)
    grid = math.prod(len(v) for v in keys.values())
    assert grid == len(points), "the points must be a full grid"
    return [f"{k}={','.join(v)}" for k, v in keys.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("loop", "sweep", "seeds"))
    parser.add_argument("--case", default="digits_mlp", choices=sorted(CASES))
    parser.add_argument("--members", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per side (loop)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.part == "seeds":
            rows.append(seeds_side(Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
        for n in args.members if args.part != "seeds" else []:
            if args.part == "loop":
                rows.append(loop_side(args.case, n, args.epochs, Path(tmp) / str(n)))
            else:
                for vectorized in (False, True):
                    rows.append(sweep_side(args.case, n, vectorized, Path(tmp)))
                    print(json.dumps(rows[-1]), flush=True)
                continue
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
