"""Seconds per training epoch at 1 and 2 intra-op threads (and torch's default, where it is another count) for a
few representative configs, on the machine as it is ("quiet") and while this script loads it with one busy-loop
process per core ("loaded"), in one run: the evidence for the thread rule in dltrain/threads.py.

Each case is a real dltrain config (Hydra compose + RunConfig.parse) built as train.train_on builds a run, its
train split cut to the case's sample count; one epoch is `engine.train_epoch` (no validation, no I/O). Per
condition and case: one untimed warm-up epoch, then up to --epochs timed epochs per thread count (fewer once
--budget seconds have passed), the counts interleaved (in reverse order every other round) so that drift cancels.
Reported: the median s/epoch per count, the ratios against 1 thread measured in the same minutes, the 1-minute
load average before and after the case (how quiet "quiet" was), the case's forward MFLOP per step (the rule's
input) with the count the rule picks on this machine, and per condition the work per step from which 2 threads
were >= 1.25x faster than 1.

    .venv/bin/python bench/threads.py                                  # all cases, quiet then loaded
    .venv/bin/python bench/threads.py --case lstm_adding --epochs 5 --condition loaded --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dltrain.core.conf_dirs import config_dir
from dltrain.core.engine import State, train_epoch
from dltrain.data import Split
from dltrain.run.assemble import build, make_best, make_optimizer, make_settings, to_device, wrap_model
from dltrain.run.config import RunConfig, to_plain
from dltrain.run.threads import auto_threads, forward_flops

CASES = {  # name -> (overrides, train samples per epoch); small epochs: on a loaded machine one can take 30x longer
    "mlp_digits": (["data=digits", "model=mlp"], 1024),  # MLP 64-128-64-10, batch 64: 16 steps
    "mlp_csv": (["data=csv", "data.path=__CSV__", "data.target=y", "model=mlp"], 1024),  # 24 columns, batch 64
    "lstm_adding": (["data=adding", "model=lstm", "data.train_size=512", "data.val_size=8", "data.test_size=8"],
                    512),  # LSTM 128 over 25 steps, batch 64: 8 steps
    "cnn_mnist": (["data=mnist", "model=cnn"], 1024),  # LeNet-like 6-16 conv, head 120-84, batch 128: 8 steps
    "mlp_mnist_wide": (["data=mnist", "model=mlp", "model.hidden=[1024,1024]"], 1024),  # 784-1024-1024-10, batch 128
    "cnn_mnist_example": (["experiment=mnist_pytorch_example"], 256),  # pytorch/examples' net, 1.2M params, batch 64
}


def write_csv(folder: Path) -> Path:
    """A tabular stand-in: 4,000 rows of 20 numeric and 4 categorical columns, a 3-class target."""
    gen = np.random.default_rng(0)
    numeric = gen.normal(size=(4000, 20))
    codes = gen.integers(0, 5, size=(4000, 4))
    target = (numeric[:, :3].sum(1) > 0).astype(int) + (codes[:, 0] > 2)
    lines = [",".join([f"x{i}" for i in range(20)] + [f"c{i}" for i in range(4)] + ["y"])]
    lines += [",".join([f"{v:.4f}" for v in row] + [f"k{c}" for c in cat] + [str(t)])
              for row, cat, t in zip(numeric, codes, target)]
    path = folder / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose(overrides: list[str]) -> RunConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return RunConfig.parse(to_plain(hydra_compose("config", overrides=[*overrides, "trainer.device=cpu"])))


def epoch_of(name: str, csv: Path) -> tuple[Callable[[], None], dict[str, Any]]:
    """One training epoch of the case, set up as train.train_on sets up a run, and what describes the case."""
    overrides, samples = CASES[name]
    parts = build(compose([o.replace("__CSV__", str(csv)) for o in overrides]))
    train = parts.data.train
    parts.data.train = Split(train.x[:samples], train.y[:samples])
    device = torch.device("cpu")
    model, channels_last = wrap_model(parts, device)
    split = to_device(parts.data.train, device, channels_last)
    optimizer, lr_scales = make_optimizer(parts)
    settings = make_settings(parts, len(split), lr_scales)
    state = State(model=model, raw_model=parts.model, optimizer=optimizer, best=make_best(parts),
                  scaler=torch.amp.GradScaler("cpu", enabled=False))
    flops = forward_flops(parts.model, train.x[:1]) * settings.batch_size
    info = {"case": name, "samples": len(split), "batch": settings.batch_size,
            "params": sum(p.numel() for p in parts.model.parameters()), "mflop_per_step": flops / 1e6,
            "rule_threads": auto_threads(flops, len(os.sched_getaffinity(0)))}
    return lambda: train_epoch(state, parts.task, split, settings, []), info


def spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy(processes: int) -> Iterator[None]:
    """`processes` busy-loop processes for the duration (this script's own load), stopped afterwards."""
    workers = [multiprocessing.get_context("fork").Process(target=spin, daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let them reach the loop before the clock starts
    try:
        yield
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def timed(epoch: Callable[[], None], threads: int) -> float:
    torch.set_num_threads(threads)
    started = time.perf_counter()
    epoch()
    return time.perf_counter() - started


def measure(epoch: Callable[[], None], counts: list[int], epochs: int, budget: float) -> dict[int, list[float]]:
    """Timed epochs per thread count, interleaved, until `epochs` rounds or `budget` seconds have passed (at least
    one round: on a loaded machine one slow epoch can take 30x the quiet one)."""
    timed(epoch, counts[0])  # warm-up: allocator, caches
    seconds: dict[int, list[float]] = {t: [] for t in counts}
    started = time.perf_counter()
    for i in range(epochs):
        if i and time.perf_counter() - started > budget:
            break
        for threads in counts if i % 2 == 0 else counts[::-1]:
            seconds[threads].append(timed(epoch, threads))
    return seconds


def run_case(name: str, condition: str, counts: list[int], args: argparse.Namespace, csv: Path) -> dict[str, Any]:
    epoch, info = epoch_of(name, csv)
    load_before = os.getloadavg()[0]
    seconds = measure(epoch, counts, args.epochs, args.budget)
    medians = {t: statistics.median(s) for t, s in seconds.items()}
    return {**info, "condition": condition, "load_before": load_before, "load_after": os.getloadavg()[0],
            "s_per_epoch": medians, "ratio_to_1": {t: medians[t] / medians[counts[0]] for t in counts},
            "epochs": seconds}


def row(r: dict[str, Any], counts: list[int]) -> str:
    times = " | ".join(f"{r['s_per_epoch'][t]:.3f}" for t in counts)
    ratios = " | ".join(f"{r['ratio_to_1'][t]:.2f}" for t in counts[1:])
    return (f"| {r['case']} | {r['condition']} | {r['load_before']:.2f} / {r['load_after']:.2f} | {r['params']:,} | "
            f"{r['batch']} | {r['samples']} | {r['mflop_per_step']:.1f} | {len(r['epochs'][counts[0]])} | {times} | "
            f"{ratios} | {r['rule_threads']} |")


def header(counts: list[int], default: int) -> str:
    names = [f"{t} thr{' (default)' if t == default else ''}" for t in counts]
    cols = ["case", "condition", "load 1-min before / after", "params", "batch", "samples", "fwd MFLOP/step",
            "epochs timed", *[f"s/epoch {n}" for n in names], *[f"{t} thr / 1 thr" for t in counts[1:]], "rule picks"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or platform.machine())


def summary(results: list[dict[str, Any]], gain: float = 1.25) -> list[str]:
    """Per condition, where 2 threads paid: the work per step from which they were `gain`x faster than 1."""
    lines = []
    for condition in dict.fromkeys(r["condition"] for r in results):
        rows = sorted((r for r in results if r["condition"] == condition), key=lambda r: r["mflop_per_step"])
        faster = [r["mflop_per_step"] for r in rows if r["ratio_to_1"][2] <= 1 / gain]
        slower = [r["mflop_per_step"] for r in rows if r["ratio_to_1"][2] > 1 / gain]
        lines.append(f"{condition}: 2 threads >= {gain}x faster than 1 at "
                     f"{', '.join(f'{f:.0f}' for f in faster) or 'no case'} MFLOP/step; not at "
                     f"{', '.join(f'{f:.0f}' for f in slower) or 'any case'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=list(CASES), help="repeatable; default: all")
    parser.add_argument("--condition", action="append", choices=["quiet", "loaded"], help="default: both")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per thread count (after a warm-up)")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="seconds per case and condition after which no further round starts (default 10)")
    parser.add_argument("--load", type=int, default=len(os.sched_getaffinity(0)),
                        help="busy-loop processes of the loaded condition (default: one per core)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    default = torch.get_num_threads()  # torch's own choice, before this script sets any
    counts = sorted({1, 2, default})
    cores = len(os.sched_getaffinity(0))
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{today}  torch {torch.__version__}  {cpu_name()}, {cores} cores, "
          f"torch default {default} threads; loaded = {args.load} busy-loop processes\n{header(counts, default)}")
    results, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        csv = write_csv(Path(folder))
        for condition in args.condition or ["quiet", "loaded"]:
            with busy(args.load) if condition == "loaded" else contextlib.nullcontext():
                for name in args.case or list(CASES):
                    results.append(run_case(name, condition, counts, args, csv))
                    print(row(results[-1], counts), flush=True)
    torch.set_num_threads(default)
    print("\n".join(summary(results)) + f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": today, "torch": torch.__version__, "cores": cores,
                                               "default_threads": default, "results": results}, indent=1))


if __name__ == "__main__":
    main()
