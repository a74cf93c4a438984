"""How stable is `dltrain lr-find`'s suggestion over seeds, against an exponential-ramp finder (issue 19 item 4)?

Per case and seed (`trainer.seed=s`: the data split, the initial weights, the shuffling):

- lr-find: what the command does (tools/lr_find.py): K log-spaced rates (default 16 from 1e-5 to 1), each held
  constant for E epochs (one lr-find per --epochs value: auto, the command's default, and 1), trained as one stack
  (run/stacked.py train_stack, together_only); its suggestion is the rate with the lowest val/loss. Wall seconds
  from composing the configs to the suggestion.
- ramp: Lightning's lr_find (lightning/pytorch/tuner/lr_finder.py, reimplemented here): one run whose rate grows
  exponentially per optimizer step, lr_0 = min, lr_k = min * (max/min)^((k+1)/N) for k >= 1 (its
  _ExponentialLR); the training loss of each step smoothed (beta 0.98, divided by 1 - beta^(global_step + 1) with
  the 1-based global step, as _LRCallback does); stop after the step whose smoothed loss exceeds 4x the best so
  far. Suggestions, the first 10 and the last point skipped: `2.x`, the steepest d(loss)/d(lr) (torch.gradient
  with spacing=lrs, Lightning 2.x) and `1.x`, the steepest d(loss)/d(step) (np.gradient of the losses, Lightning
  1.x). Two budgets: `same` = the optimizer steps of the first lr-find's stack (K x steps per epoch x E), range
  1e-5..1; `default` = Lightning's 100 steps, range 1e-8..1. Model, optimizer, data and step are dltrain's
  (run/assemble.py assemble, the task's step); each epoch reshuffled as the engine does.
- full: the reference of what a suggestion is worth: the K grid rates trained as `dltrain -m optim.lr=...
  hydra/launcher=vectorized` would train them (the case's own epochs, schedule and early stopping; one stack);
  each rate's best val/loss. A ramp suggestion counts as the grid rate nearest to it in log space; a finder's
  regret is the full-training val/loss of its rate minus the best rate's. `optim default`: no search, the
  config's own rate.

    OMP_NUM_THREADS=1 .venv/bin/python bench/lr_find.py [--seeds 5] [--cases digits mnist] [--epochs auto 1] [--json F]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dltrain.core.engine import set_lr, steps_per_epoch
from dltrain.run.assemble import assemble, pick_device
from dltrain.run.config import RunConfig
from dltrain.run.stacked import Member, train_stack
from dltrain.tools.lr_find import Probe, epochs_value, judged, member_configs, member_list

CASES = {"digits": ["model=mlp", "optim=sgd", "data=digits"], "mnist": ["data=mnist", "model=mlp", "optim=adam"]}
NO_CKPT = ["trainer.ckpt.save_last=false", "trainer.ckpt.save_best=false"]  # changes no number, writes less
BETA, STOP, SKIP_BEGIN, SKIP_END = 0.98, 4.0, 10, 1  # Lightning's _LRCallback and suggestion() defaults


def composed(overrides: list[str]) -> dict[str, Any]:
    """The run's config as plain dicts, composed as `dltrain OVERRIDES` composes it."""
    from hydra import initialize_config_dir

    from dltrain.core.conf_dirs import config_dir
    from dltrain.run.config import to_plain
    from dltrain.run.points import compose_checked, task_only

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg, problem = compose_checked(task_only(overrides))
    if problem:
        sys.exit(f"lr_find bench: {problem}")
    return to_plain(cfg)


def with_lr(plain: dict[str, Any], lr: float) -> RunConfig:
    one = copy.deepcopy(plain)
    one["optim"]["lr"] = lr
    return RunConfig.load(one, None)


def stack_losses(members: list[Member]) -> list[float | None]:
    """Each member's lowest val/loss (None: diverged or failed), trained as one stack."""
    reports = train_stack(members, lambda i, report: None, together_only=True)
    return judged([0.0] * len(members), reports).losses


def lr_find(overrides: list[str], probe: Probe, root: Path) -> tuple[float, float, int]:
    """lr-find as the command runs it: its suggestion, wall seconds and each rate's epochs (--epochs auto: its own)."""
    started = time.monotonic()
    configs, epochs = member_configs(overrides, probe, None)
    losses = stack_losses(member_list(configs, overrides, root, dataclasses.replace(probe, epochs=epochs)))
    seconds = time.monotonic() - started
    best = min((k for k, v in enumerate(losses) if v is not None), key=lambda k: losses[k])
    return configs[best][0], seconds, epochs


def probe_name(probe: Probe) -> str:
    return f"lr-find E={'auto' if probe.epochs is None else probe.epochs}"


def full_training(overrides: list[str], rates: list[float], root: Path) -> list[float | None]:
    """Each grid rate's best val/loss after the case's full default training (its epochs, schedule, early stop)."""
    plain = composed([*overrides, *NO_CKPT])
    return stack_losses([Member(with_lr(plain, lr), root / f"{k:02d}_lr={lr:g}", [*overrides, *NO_CKPT,
                                                                                    f"optim.lr={lr:g}"])
                         for k, lr in enumerate(rates)])


def ramp_lr(k: int, steps: int, low: float, high: float) -> float:
    """Lightning's _ExponentialLR: the min at step 0, then min * (max/min)^((k+1)/N): its step 1 uses exponent 2/N."""
    return low if k == 0 else low * (high / low) ** ((k + 1) / steps)


def ramp(overrides: list[str], budget: Callable[[int, int], int], low: float, high: float,
         run_dir: Path) -> tuple[list[float], list[float]]:
    """One run of budget(train size, batch) steps, the rate ramped per step; the smoothed training loss after each
    step (Lightning's _LRCallback); stops after the step whose smoothed loss exceeds STOP x the best so far (a NaN
    never stops it, as there)."""
    config = with_lr(composed([*overrides, *NO_CKPT, "sched=constant", "early_stopping=none"]), low)
    run = assemble(config, run_dir, pick_device(config.trainer))  # the device lr-find's stack trains on
    model, optimizer, task, train = run.state.model, run.state.optimizer, run.parts.task, run.splits[0]
    batch, seed = config.data.batch_size, config.trainer.seed
    steps = budget(len(train), batch)
    lrs: list[float] = []
    losses: list[float] = []
    avg = best = 0.0
    model.train()
    for epoch in range(steps):  # enough epochs; the loop ends after `steps` steps
        gen = torch.Generator(device=train.x.device).manual_seed(seed * 1_000_003 + epoch)  # the engine's shuffle
        perm = torch.randperm(len(train), device=train.x.device, generator=gen)
        for start in range(0, len(train), batch):
            k = len(lrs)
            lr = ramp_lr(k, steps, low, high)
            set_lr(optimizer, lr, run.settings.lr_scales)
            idx = perm[start:start + batch]
            loss_sum, _ = task.step(model, train.x[idx], train.y[idx])
            loss = loss_sum / len(idx)  # the batch mean, as a LightningModule's training_step returns it
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            avg = BETA * avg + (1 - BETA) * loss.item()  # a host read per step, as Lightning's callback does
            smoothed = avg / (1 - BETA ** (k + 2))  # Lightning's global_step is already k + 1 here
            stop = k + 1 > 1 and smoothed > STOP * best
            if smoothed < best or k == 0:
                best = smoothed
            lrs.append(lr)
            losses.append(smoothed)
            if stop or len(lrs) == steps:
                return lrs, losses
    return lrs, losses


def suggestions(lrs: list[float], losses: list[float]) -> tuple[float | None, float | None]:
    """Lightning 2.x's suggestion (steepest d loss / d lr) and 1.x's (steepest d loss / d step)."""
    loss = torch.tensor(losses[SKIP_BEGIN:-SKIP_END])  # float32, as Lightning's own tensors
    rate = torch.tensor(lrs[SKIP_BEGIN:-SKIP_END])
    finite = torch.isfinite(loss)
    if int(finite.sum()) < 2:
        return None, None
    kept = torch.arange(len(losses))[SKIP_BEGIN:-SKIP_END][finite]
    new = lrs[int(kept[int(torch.argmin(torch.gradient(loss[finite], spacing=[rate[finite]])[0]))])]
    old = lrs[int(np.gradient(loss[finite].numpy()).argmin()) + SKIP_BEGIN]  # 1.x: index + skip, as it did
    return new, old


def nearest(rates: list[float], lr: float | None) -> float | None:
    return None if lr is None else min(rates, key=lambda r: abs(math.log10(r / lr)))


def one_seed(case: str, seed: int, probes: list[Probe], full_epochs: int | None, tmp: Path) -> dict[str, Any]:
    """Every finder's suggestion and wall seconds on one case and seed (lr-find once per probe: its epochs), and
    the full-training val/loss per rate. The ramp's `same` budget is the first probe's."""
    overrides = [*CASES[case], f"trainer.seed={seed}"]
    found: dict[str, dict[str, Any]] = {"optim default": {"lr": composed(overrides)["optim"]["lr"], "seconds": 0.0,
                                                          "steps": 0}}  # no search: the config's own rate
    for k, probe in enumerate(probes):
        lr, seconds, epochs = lr_find(overrides, probe, tmp / f"probe_{k}")
        found[probe_name(probe)] = {"lr": lr, "seconds": seconds, "epochs": epochs}
    probe = probes[0]

    def same(train_size: int, batch: int) -> int:
        """The first probe's stack's optimizer steps, all members' together (known once the data is built)."""
        per_epoch = probe.num * steps_per_epoch(train_size, batch, 1, 1)
        for one in probes:
            found[probe_name(one)]["steps"] = per_epoch * found[probe_name(one)]["epochs"]
        return per_epoch * found[probe_name(probe)]["epochs"]

    budgets = {"same": (same, probe.low, probe.high), "default": (lambda n, b: 100, 1e-8, 1.0)}
    for budget, (steps, low, high) in budgets.items():
        started = time.monotonic()
        lrs, losses = ramp(overrides, steps, low, high, tmp / f"ramp_{budget}")
        spent = time.monotonic() - started
        for rule, suggested in zip(("2.x", "1.x"), suggestions(lrs, losses)):
            found[f"ramp {budget} {rule}"] = {"lr": suggested, "seconds": spent, "steps": len(lrs)}
    rates = probe.rates()  # the same grid for every probe (only their epochs differ)
    epochs = [f"trainer.max_epochs={full_epochs}"] if full_epochs else []
    started = time.monotonic()
    full = full_training([*overrides, *epochs], rates, tmp / "full")
    full_seconds = time.monotonic() - started
    best = min((k for k, v in enumerate(full) if v is not None), key=lambda k: full[k])
    for one in found.values():
        one["grid"] = nearest(rates, one["lr"])
        value = None if one["grid"] is None else full[rates.index(one["grid"])]
        one["regret"] = math.inf if value is None else value - full[best]
    return {"seed": seed, "found": found, "full": full, "best": rates[best], "full_seconds": full_seconds}


def spread(lrs: list[float]) -> float:
    return math.log10(max(lrs) / min(lrs)) if lrs else math.nan


def rows(case: str, seeds: list[dict[str, Any]]) -> list[str]:
    """The case's table rows: per finder its suggestions, their spread, distinct count, regret and seconds."""
    out = []
    for finder in seeds[0]["found"]:
        ones = [s["found"][finder] for s in seeds]
        lrs = [o["lr"] for o in ones if o["lr"] is not None]
        shown = ", ".join("none" if o["lr"] is None else f"{o['lr']:.3g}" for o in ones)
        grid = ", ".join("-" if o["grid"] is None else f"{o['grid']:g}" for o in ones)
        regrets = [o["regret"] for o in ones]
        hits = sum(o["grid"] == s["best"] for o, s in zip(ones, seeds))
        steps = sorted({o["steps"] for o in ones})
        out.append(f"| {case} | {finder} | {shown} | {grid} | {spread(lrs):.2f} | {len(set(lrs))} | {hits} | "
                   f"{statistics.mean(regrets):.4f} | {max(regrets):.4f} | "
                   f"{steps[0] if len(steps) == 1 else f'{steps[0]}-{steps[-1]}'} | "
                   f"{statistics.mean(o['seconds'] for o in ones):.2f} |")
    best = [s["best"] for s in seeds]
    out.append(f"| {case} | full-training best | {', '.join(f'{b:g}' for b in best)} | | {spread(best):.2f} | "
               f"{len(set(best))} | {len(seeds)} | 0 | 0 | | {statistics.mean(s['full_seconds'] for s in seeds):.2f} |")
    return out


HEADER = ["| case | finder | suggestions (seed 0, 1, ...) | as grid rates | spread (decades) | distinct | "
          "= full best | mean regret | max regret | steps | mean s |", "|---|---|---|---|---|---|---|---|---|---|---|"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["digits", "mnist"])
    parser.add_argument("--num", type=int, default=Probe.num, help="lr-find's rates K (default 16)")
    parser.add_argument("--epochs", type=epochs_value, nargs="+", default=[None, 1],
                        help="lr-find's epochs per rate or auto, one lr-find each (default: auto, the command's "
                        "default, and 1)")
    parser.add_argument("--full-epochs", type=int, default=None, help="cap the reference's epochs (smoke tests)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()
    probes = [Probe(num=args.num, epochs=e) for e in args.epochs]
    started, report, table = time.monotonic(), {"cases": {}}, list(HEADER)
    for case in args.cases:
        seeds = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory(prefix="lr_find_bench_") as tmp:
                seeds.append(one_seed(case, seed, probes, args.full_epochs, Path(tmp)))
            print(f"{case} seed {seed}: " + ", ".join(f"{f} {o['lr']}" for f, o in seeds[-1]["found"].items())
                  + f"; full best {seeds[-1]['best']:g}", flush=True)
        report["cases"][case] = seeds
        table += rows(case, seeds)
    report["seconds"] = time.monotonic() - started
    report["probe"] = {"num": args.num, "low": probes[0].low, "high": probes[0].high, "epochs": args.epochs}
    print("\n".join(["", *table, "", f"bench: {report['seconds']:.0f} s in all"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
