"""Seconds per epoch of the dltrain engine against a minimal hand-written PyTorch loop, in one process.

Both train the same model (same initial weights) on the same synthetic data, already on the device, with the
same optimizer (SGD with momentum), one step per batch. The engine is timed through `engine.train_epoch`, its
real training loop (per-step metric sums on the device, one read per epoch); the hand loop is randperm, slice,
forward, cross_entropy, zero_grad, backward, step. Epochs alternate engine/loop to cancel drift; the medians
and their ratio are printed. Targets: engine/loop <= 1.10 on CPU, <= 1.05 on GPU.

    python bench/engine_vs_loop.py                      # every case that fits the device
    python bench/engine_vs_loop.py --case mlp128 --train-size 20000 --epochs 3
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dltrain.data import DATASETS, Split
from dltrain.engine import Settings, State, train_epoch
from dltrain.models import MODELS
from dltrain.tasks import Classification

# case -> (model config, sample shape, samples, batch size, autocast dtype or None, needs cuda)
CASES = {
    "mlp128": ({"name": "mlp", "hidden": [512, 256]}, [1, 28, 28], 60_000, 128, None, False),
    "mlp512": ({"name": "mlp", "hidden": [512, 256]}, [1, 28, 28], 60_000, 512, None, False),
    "lenet": ({"name": "cnn", "channels": [6, 16]}, [3, 32, 32], 50_000, 128, None, False),
    "resnet_bf16": ({"name": "resnet"}, [3, 32, 32], 50_000, 512, torch.bfloat16, True),
}
LR = 0.01


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_runner(model: torch.nn.Module, data: Split, batch: int, dtype: torch.dtype | None) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    state = State(model=model, raw_model=model, optimizer=optimizer,
                  scaler=torch.amp.GradScaler(data.x.device.type, enabled=False))
    settings = Settings(max_epochs=1, batch_size=batch, lr_at=lambda t: LR, lr_per_step=False, autocast_dtype=dtype,
                        log_every_n_steps=0)
    task = Classification()

    def epoch() -> None:
        train_epoch(state, task, data, settings, [])
        state.epoch += 1

    return epoch


def loop_runner(model: torch.nn.Module, data: Split, batch: int, dtype: torch.dtype | None) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    device = data.x.device

    def epoch() -> None:
        model.train()
        perm = torch.randperm(len(data.x), device=device)
        for start in range(0, len(perm), batch):
            idx = perm[start:start + batch]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(data.x[idx]).float(), data.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def timed(epoch: Callable[[], None], device: torch.device) -> float:
    sync(device)
    started = time.perf_counter()
    epoch()
    sync(device)
    return time.perf_counter() - started


def run_case(name: str, device: torch.device, epochs: int, train_size: int | None) -> dict:
    model_cfg, shape, samples, batch, dtype, _ = CASES[name]
    data = DATASETS.build({"name": "synthetic", "shape": shape, "train_size": train_size or samples,
                           "val_size": 0, "test_size": 0}, seed=0).train
    data = Split(data.x.to(device), data.y.to(device))
    torch.manual_seed(0)
    model = MODELS.build(model_cfg, in_shape=tuple(shape), num_outputs=10).to(device)
    if len(shape) == 3 and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        data = Split(data.x.contiguous(memory_format=torch.channels_last), data.y)
    runners = {"engine": engine_runner(model, data, batch, dtype),
               "loop": loop_runner(copy.deepcopy(model), data, batch, dtype)}
    for run in runners.values():  # warm-up: allocator, kernels, caches
        timed(run, device)
    seconds: dict[str, list[float]] = {"engine": [], "loop": []}
    for _ in range(epochs):
        for key in ("engine", "loop"):
            seconds[key].append(timed(runners[key], device))
    engine, loop = statistics.median(seconds["engine"]), statistics.median(seconds["loop"])
    return {"case": name, "device": device.type, "batch": batch, "samples": len(data.x), "engine_s": engine,
            "loop_s": loop, "ratio": engine / loop, "target": 1.05 if device.type == "cuda" else 1.10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--case", action="append", choices=list(CASES), help="repeatable; default: all that fit")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per side")
    parser.add_argument("--train-size", type=int, default=None, help="fewer samples for a quick run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{datetime.date.today()}  torch {torch.__version__}  {name}")
    print(f"{'case':12s} {'device':6s} {'batch':>5s} {'samples':>7s} {'engine s/ep':>11s} {'loop s/ep':>9s} "
          f"{'ratio':>6s} target")
    results = []
    for case in args.case or list(CASES):
        if CASES[case][5] and device.type != "cuda":
            print(f"{case:12s} skipped: needs a CUDA GPU")
            continue
        r = run_case(case, device, args.epochs, args.train_size)
        results.append(r)
        print(f"{case:12s} {r['device']:6s} {r['batch']:5d} {r['samples']:7d} {r['engine_s']:11.3f} "
              f"{r['loop_s']:9.3f} {r['ratio']:6.3f} <= {r['target']}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"date": str(datetime.date.today()), "torch": torch.__version__, "device": name,
                       "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
