"""Seconds per training epoch of the dltrain engine against a minimal hand-written PyTorch loop, in one process.

Each case composes a real dltrain config (Hydra, conf/ + overrides) and assembles it exactly as a run does
(`RunConfig.parse`, then `assemble.assemble`, as `train.train_on` does; `trainer.threads` is this process's
thread count, so the bench keeps torch's own or --threads), then times one epoch at a time of `engine.fit` with
an empty val/test split and no callbacks: the engine's whole loop (per-epoch lr, `train_epoch` with its on-device
metric sums and a read every `log_every_n_steps`, the epoch-end read), but no TensorBoard, checkpoint or
progress I/O.

The hand loop trains a second copy of the same model (same initial weights: the engine's state dict loaded into
a freshly built model), with an optimizer built from the same config node, on the same device tensors:
randperm once per epoch, slice a batch, forward, cross_entropy, zero_grad, backward, step.

One warm-up epoch each (not timed), then N timed epochs each, interleaved engine/loop in ABBA order (engine
first in even rounds, loop first in odd ones) so that drift and "who runs second" cancel; on a GPU the clock is
read only after torch.cuda.synchronize(). The table gives the median s/epoch of both and engine/loop.
Targets: engine/loop <= 1.10 on CPU, <= 1.05 on GPU.

    .venv/bin/python bench/engine_vs_loop.py                         # every case that fits the device
    .venv/bin/python bench/engine_vs_loop.py --case mlp128 --train-size 20000 --epochs 3 --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dltrain.core.conf_dirs import config_dir
from dltrain.core.engine import fit
from dltrain.core.optim import ParamGroup, build_optimizer
from dltrain.data import Split
from dltrain.models import MODELS
from dltrain.run.assemble import PRECISIONS, assemble
from dltrain.run.config import RunConfig, to_plain

TARGETS = {"cpu": 1.10, "cuda": 1.05}
OPTIM = ["optim=momentum"]  # SGD, lr 0.05, momentum 0.9 (conf/optim/momentum.yaml) on both sides
MLP = ["model=mlp", "model.hidden=[512,256]", "data.shape=[1,28,28]"]  # 784-512-256-10
IMAGES = ["data.shape=[3,32,32]"]


@dataclass(frozen=True)
class Case:
    overrides: list[str]  # on top of data=synthetic, trainer.*, optim
    batch: int
    samples: int
    precision: str = "32"  # trainer.precision: "32" | "bf16"
    needs: tuple[str, ...] = ()  # "cuda", "model:<name>"


CASES = {
    "mlp128": Case(MLP, 128, 60_000),
    "mlp512": Case(MLP, 512, 60_000),
    "lenet": Case(["model=cnn", *IMAGES], 128, 50_000),  # conf/model/cnn.yaml: 6-16 channels, head 120-84
    # A model so small that each step is all framework overhead (dispatch on CPU, kernel launches on a GPU):
    "overhead": Case(["model=mlp", "model.hidden=[32]", "data.shape=[64]"], 32, 20_000),
    "resnet_bf16": Case(["model=resnet", *IMAGES], 512, 50_000, "bf16", ("model:resnet", "cuda")),  # ResNet-18
}


def skip_reason(case: Case, device: torch.device) -> str | None:
    """Why a case cannot run here, or None."""
    for need in case.needs:
        if need.startswith("model:") and need[6:] not in MODELS.names():
            return f"no '{need[6:]}' model in dltrain.models.MODELS (registered: {', '.join(MODELS.names())})"
        if need == "cuda" and device.type != "cuda":
            return "needs a CUDA GPU (bf16 autocast ResNet); this run is on the CPU"
    return None


def compose(case: Case, device: torch.device, train_size: int | None) -> RunConfig:
    """The checked dltrain config of one case, as `dltrain` itself would compose and parse it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [*case.overrides, *OPTIM, "data=synthetic", f"data.train_size={train_size or case.samples}",
                 "data.val_size=0", "data.test_size=0", f"data.batch_size={case.batch}",
                 f"trainer.device={device.type}", f"trainer.precision='{case.precision}'", "sched=constant",
                 "early_stopping.monitor=train/loss",  # no val split to monitor
                 f"trainer.threads={torch.get_num_threads()}"]  # as the bench runs: torch's own, or --threads
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return RunConfig.parse(to_plain(hydra_compose("config", overrides=overrides)))


def engine_side(config: RunConfig, device: torch.device) -> tuple[Callable[[], None], nn.Module, Split, bool]:
    """An epoch of `engine.fit` as train.train_on sets it up (`assemble`, its callbacks left out); returns it, the
    raw model, the train split on the device and whether channels_last was chosen."""
    with tempfile.TemporaryDirectory() as run_dir:  # the callbacks' folder: they are made, never run
        run = assemble(config, Path(run_dir), device)
    train, val, test = run.splits

    def epoch() -> None:
        run.settings.max_epochs = run.state.epoch + 1  # fit runs exactly one more epoch
        fit(run.state, run.parts.task, train, val, test, run.settings, [])

    return epoch, run.parts.model, train, run.channels_last


def loop_side(config: RunConfig, init: nn.Module, data: Split, channels_last: bool,
              device: torch.device) -> Callable[[], None]:
    """The hand-written loop on a fresh model carrying `init`'s weights and the same optimizer config."""
    model = MODELS.build(config.model, in_shape=tuple(data.x.shape[1:]),
                         num_outputs=config.data.spec.kwargs["num_classes"])
    model.load_state_dict(init.state_dict())
    model = model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    optimizer = build_optimizer(config.optim, [ParamGroup(list(model.parameters()))])
    batch, dtype = config.data.batch_size, PRECISIONS[str(config.trainer.precision)]
    x_all, y_all = data.x, data.y
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext

    def epoch() -> None:
        model.train()
        perm = torch.randperm(len(x_all), device=device)
        for start in range(0, len(perm), batch):
            idx = perm[start:start + batch]
            with autocast():
                loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def timed(epoch: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    epoch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


class OpCounter(TorchDispatchMode):
    """Counts the aten ops a side dispatches (views included). On a GPU nearly every non-view op is one kernel
    launch, so for small models this is the per-step overhead, free of timing noise."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.count += not str(func).startswith("profiler.")  # the optimizer's record_function markers
        return func(*args, **(kwargs or {}))


def ops_per_step(epoch: Callable[[], None], steps: int) -> float:
    with OpCounter() as counter:
        epoch()
    return counter.count / steps


def run_case(name: str, device: torch.device, epochs: int, train_size: int | None) -> dict[str, Any]:
    cfg = compose(CASES[name], device, train_size)
    engine, init, data, channels_last = engine_side(cfg, device)
    runners = {"engine": engine, "loop": loop_side(cfg, init, data, channels_last, device)}  # before any step
    for run in runners.values():  # warm-up: allocator, kernels, caches, cuDNN choices
        timed(run, device)
    steps = -(-len(data) // cfg.data.batch_size)
    ops = {key: ops_per_step(run, steps) for key, run in runners.items()}  # one more (untimed) epoch each
    seconds: dict[str, list[float]] = {"engine": [], "loop": []}
    for i in range(epochs):
        for key in ("engine", "loop") if i % 2 == 0 else ("loop", "engine"):
            seconds[key].append(timed(runners[key], device))
    eng, loop = statistics.median(seconds["engine"]), statistics.median(seconds["loop"])
    best = min(seconds["engine"]) / min(seconds["loop"])  # noise only adds time: a check on the medians
    return {"case": name, "device": device.type, "batch": cfg.data.batch_size, "samples": len(data),
            "precision": str(cfg.trainer.precision), "channels_last": channels_last, "engine_s": eng,
            "loop_s": loop, "ratio": eng / loop, "ratio_of_min": best, "target": TARGETS[device.type],
            "engine_ops_per_step": ops["engine"], "loop_ops_per_step": ops["loop"],
            "epochs": seconds}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor())
    return f"{model or 'CPU'}, {torch.get_num_threads()} torch threads"


def pick(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible")
    return torch.device("cuda" if requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
                        else "cpu")


def row(r: dict[str, Any]) -> str:
    return (f"{r['case']:12s} {r['device']:6s} {r['batch']:5d} {r['samples']:7d} {r['engine_s']:11.3f} "
            f"{r['loop_s']:9.3f} {r['ratio']:6.3f} {r['ratio_of_min']:9.3f} {r['engine_ops_per_step']:7.1f} "
            f"{r['loop_ops_per_step']:7.1f}  target <= {r['target']:.2f} "
            f"{'ok' if r['ratio'] <= r['target'] else 'ABOVE TARGET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--case", action="append", choices=list(CASES), help="repeatable; default: all that fit")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per side (after one warm-up each)")
    parser.add_argument("--train-size", type=int, default=None, help="fewer samples, for a quick smoke run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick(args.device)
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    header = {"date": today, "torch": torch.__version__, "device": device_name(device)}
    print(f"{today} (UTC)  torch {torch.__version__}  {header['device']}")
    print(f"{'case':12s} {'device':6s} {'batch':>5s} {'samples':>7s} {'engine s/ep':>11s} {'loop s/ep':>9s} "
          f"{'ratio':>6s} {'min ratio':>9s} {'ops/st':>7s} {'loop':>7s}")
    results, skipped = [], {}
    for name in args.case or list(CASES):
        reason = skip_reason(CASES[name], device)
        if reason:
            skipped[name] = reason
            print(f"{name:12s} skipped: {reason}", flush=True)
            continue
        results.append(run_case(name, device, args.epochs, args.train_size))
        print(row(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**header, "results": results, "skipped": skipped}, indent=2) + "\n")


if __name__ == "__main__":
    main()
