"""data=arrays: training on a memory-mapped .npy larger than the process may hold, against the in-memory path.

Writes an .npy of float32 inputs (N, F) of `--size-mb` MiB and its labels (a fixed linear teacher), chunk by
chunk (never whole in memory), then runs `dltrain` in-process in child processes, one per run:

- `mapped`: data.mmap_threshold_mb below the file size, under a memory limit (`--limit-mb` MiB more than the
  process has after its imports) set with resource.setrlimit(RLIMIT_DATA): the limit on private writable
  memory (heap, anonymous maps), which is what holding the array would take. RLIMIT_AS cannot be used: it
  counts the address space of the file mapping itself, so no file larger than it could even be mapped.
- `in_memory_limited`: the same limit with the file read into memory: expected to fail (one line).
- `in_memory`: no limit, the file read into memory: the reference cost per epoch.
- `mapped_cold`: as `mapped`, one epoch, after posix_fadvise(DONTNEED) dropped the file's pages from the page
  cache, so the epoch reads them from the disk (the case of a file larger than the machine's RAM).

`mapped` and `in_memory` run `--repeats` times each in alternating order; the medians are compared.

Each child reports its training seconds per epoch (metrics.json's train_seconds / epochs: the training
passes only), its CPU seconds per epoch (process time of the run after its build, / epochs: training plus
validation; steadier than wall time on a shared machine), the build time (reading the file, or the mapped
path's one load-time pass: non-finite check and train statistics) and, sampled every 50 ms from
/proc/self/status, its peak RssAnon (private memory) and RssFile (file pages mapped in: page cache, which the
kernel can drop under pressure, so not a limit). Results: bench/README.md.

    .venv/bin/python bench/arrays_mmap.py                       # 1 GiB file, 512 MiB limit, 2 epochs
    .venv/bin/python bench/arrays_mmap.py --size-mb 512 --limit-mb 256 --epochs 3 --repeats 3   # README run
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_data(folder: Path, size_mb: int, features: int, seed: int = 0) -> tuple[Path, Path, int]:
    n = size_mb * 2**20 // (4 * features)
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(features, 10)).astype(np.float32)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(n, features))
    y = np.empty(n, dtype=np.int64)
    step = max(1, (64 << 20) // (4 * features))
    for a in range(0, n, step):
        block = rng.normal(size=(min(step, n - a), features)).astype(np.float32)
        x[a:a + len(block)] = block
        y[a:a + len(block)] = (block @ teacher).argmax(1)
    x.flush()
    del x
    np.save(folder / "y.npy", y)
    return folder / "x.npy", folder / "y.npy", n


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakMemory(threading.Thread):
    """Samples RssAnon and RssFile every 50 ms; keeps the maxima (MiB)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.anon = self.file = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.anon = max(self.anon, status_kb("RssAnon") / 1024)
            self.file = max(self.file, status_kb("RssFile") / 1024)
            time.sleep(0.05)


def child(args: argparse.Namespace) -> None:
    """One measured run (in its own process); prints one JSON line."""
    import torch
    from hydra import compose, initialize_config_dir

    from dltrain.core.conf_dirs import config_dir
    from dltrain.run import assemble as assembly  # its `build`, timed below (assemble calls it by that name)
    from dltrain.run import train as train_module
    from dltrain.run.config import RunConfig, to_plain

    torch.set_num_threads(args.threads)
    threshold = 1e9 if args.mode.startswith("in_memory") else args.size_mb / 4
    overrides = ["data=arrays", f"data.path={args.x}", f"data.y_path={args.y}", f"data.mmap_threshold_mb={threshold}",
                 "data.fractions=[0.9,0.1,0.0]", "data.batch_size=512", "model=mlp", "model.hidden=[64]",
                 "optim=adam", f"trainer.max_epochs={args.epochs}", "trainer.device=cpu", "early_stopping=none",
                 "trainer.log_every_n_steps=0", "trainer.ckpt.save_last=false", "trainer.ckpt.save_best=false"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        config = RunConfig.parse(to_plain(compose("config", overrides=overrides)))
    result: dict = {"mode": args.mode, "overrides": overrides}
    peak = PeakMemory()
    peak.start()  # before the limit: its thread stack is not the data's memory
    if args.mode == "mapped_cold":  # drop the file's cached pages: the epoch reads them from the disk
        fd = os.open(args.x, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    if args.mode != "in_memory":
        base = status_kb("VmData") * 1024
        limit = base + args.limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        result["rlimit_data_mb"] = round(limit / 2**20)
        result["vmdata_before_mb"] = round(base / 2**20)
    build_seconds = []
    real_build = assembly.build

    def timed_build(cfg):  # noqa: ANN001, ANN202  (the run's own build: data, task, model)
        begun, cpu = time.perf_counter(), time.process_time()
        try:
            return real_build(cfg)
        finally:
            build_seconds.append((time.perf_counter() - begun, time.process_time() - cpu))

    assembly.build = timed_build
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        report = train_module.run_job(config, Path(args.run_dir), overrides)
        cpu = time.process_time() - cpu_started - build_seconds[0][1]  # the run's CPU seconds after its build
        result.update(epochs=report["epochs"], train_s_per_epoch=round(report["train_seconds"] / report["epochs"], 3),
                      cpu_s_per_epoch=round(cpu / report["epochs"], 3),
                      samples_per_sec=round(report["samples_per_sec"]), val_acc=round(report["final"]["val/acc"], 4),
                      status="trained")
    except BaseException as err:  # noqa: BLE001  (MemoryError, ConfigError: what the limit does is the result)
        result.update(status="failed", error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    peak.stop.set()
    peak.join()
    result["build_s"] = round(build_seconds[0][0], 2) if build_seconds else None
    result.update(peak_rss_anon_mb=round(peak.anon), peak_rss_file_mb=round(peak.file),
                  vm_hwm_mb=round(status_kb("VmHWM") / 1024), wall_s=round(time.perf_counter() - started, 1))
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the inputs .npy (MiB)")
    parser.add_argument("--limit-mb", type=int, default=512, help="RLIMIT_DATA above the process's start (MiB)")
    parser.add_argument("--features", type=int, default=512, help="features per sample (float32)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--repeats", type=int, default=2, help="mapped / in-memory runs each, alternating")
    parser.add_argument("--skip-cold", action="store_true", help="no mapped_cold run")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the data (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--mode", default=None, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--x", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--y", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        child(args)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        x, y, n = write_data(folder, args.size_mb, args.features)
        print(f"wrote {x} ({x.stat().st_size / 2**20:.0f} MiB, {n} x {args.features} float32) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        results = []
        modes = ["in_memory_limited"] + ([] if args.skip_cold else ["mapped_cold"])
        for r in range(args.repeats):  # alternating order: drift and "who runs second" cancel
            modes += ["mapped", "in_memory"] if r % 2 == 0 else ["in_memory", "mapped"]
        for mode in modes:
            cmd = [sys.executable, __file__, "--mode", mode, "--x", str(x), "--y", str(y), "--run-dir",
                   str(folder / mode), "--size-mb", str(args.size_mb), "--limit-mb", str(args.limit_mb),
                   "--epochs", str(1 if mode == "mapped_cold" else args.epochs), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            result = json.loads(line[7:]) if line else {"mode": mode, "status": "crashed", "rc": proc.returncode,
                                                        "stderr": proc.stderr.strip().splitlines()[-1:]}
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "overrides"}), flush=True)
    summary = {}
    for key in ("train_s_per_epoch", "cpu_s_per_epoch"):
        for mode in ("mapped", "in_memory"):
            values = [r[key] for r in results if r["mode"] == mode and r.get("status") == "trained"]
            summary[f"{mode} {key}"] = statistics.median(values) if values else None
        if summary[f"mapped {key}"] and summary[f"in_memory {key}"]:
            summary[f"mapped/in_memory {key}"] = round(summary[f"mapped {key}"] / summary[f"in_memory {key}"], 3)
    print("medians: " + json.dumps(summary), flush=True)
    info = {"summary": summary, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "size_mb": args.size_mb, "limit_mb": args.limit_mb, "samples": n, "features": args.features,
            "epochs": args.epochs,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "results": results}
    if args.json:
        args.json.write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
