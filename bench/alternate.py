"""Fine A/B of the engine against the hand loop on short epochs: many alternating runs, the minimum of each.

Short epochs alternated many times resolve per-step differences of ~1% that whole-epoch medians on a shared
machine cannot; the minimum is the estimator because load from other processes only ever adds time.

    .venv/bin/python bench/alternate.py --case overhead --steps 100 --rounds 80
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from engine_vs_loop import CASES, compose, engine_side, loop_side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="overhead", choices=[c for c in CASES if not CASES[c].needs])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per short epoch")
    parser.add_argument("--rounds", type=int, default=80, help="epochs per side, alternated")
    args = parser.parse_args()
    device = torch.device("cpu")
    case = CASES[args.case]
    cfg = compose(case, device, case.batch * args.steps)
    engine, init, data, channels_last = engine_side(cfg, device)
    sides = {"engine": engine, "loop": loop_side(cfg, init, data, channels_last, device)}
    seconds: dict[str, list[float]] = {"engine": [], "loop": []}
    for i in range(args.rounds):
        for key in ("engine", "loop") if i % 2 == 0 else ("loop", "engine"):
            started = time.perf_counter()
            sides[key]()
            seconds[key].append(time.perf_counter() - started)
    best = {k: min(v) / args.steps * 1e6 for k, v in seconds.items()}
    median = statistics.median(seconds["engine"]) / statistics.median(seconds["loop"])
    print(f"{args.case}: us/step engine {best['engine']:.1f} loop {best['loop']:.1f}  "
          f"ratio of minima {best['engine'] / best['loop']:.3f}  ratio of medians {median:.3f}")


if __name__ == "__main__":
    main()
