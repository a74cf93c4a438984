"""`trainer.profile=N`: where an epoch's time goes. torch.profiler records N training steps after WARMUP steps
(run under the profiler but not recorded: the allocator, kernels and caches settle), writes the trace to the run
folder (TRACE, Chrome trace JSON: open it in ui.perfetto.dev or chrome://tracing), and prints the top operations by
self time per step and the device-to-host reads per step. Then it stops: the run trains on normally.

A step here is what the engine does between two optimizer steps' ends (`on_train_step`): slicing the batch, the
forward and backward pass, the optimizer, the loop's Python (the `ProfilerStep` rows' self time). The reads are
the `aten::_local_scalar_dense` events on a CPU: one per `.item()`, `float()` or `bool()` of a tensor, each of which
waits for the device when the tensor is on a GPU. On a GPU they are the device-to-host copies (`Memcpy DtoH`: an
`.item()` of a device tensor, the `.tolist()` of the logged sums), and the `.item()` count is shown beside them:
it includes reads of CPU tensors, such as torch's Adam reading its step counters (kept on the CPU unless
`capturable`/`fused`: 1 per parameter tensor per step on a CPU, 2 with foreach on a GPU), which wait for nothing. When the steps profiled cross
an epoch's end they include its validation pass and callbacks: one line says so.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from dltrain.core.callbacks import CALLBACKS
from dltrain.core.engine import Callback, State
from dltrain.core.files import write_atomic

WARMUP = 3  # steps under the profiler before it records (not counted)
TRACE = "profile.json"  # in the run folder
TOP = 10  # operations shown, by self CPU time
READ = "aten::_local_scalar_dense"  # the op behind .item()/float()/bool() of a tensor: a host read
STEP_MARK = "ProfilerStep"  # torch.profiler's per-step range: its self time is the Python between the ops (the
# loop's, and the profiler's own overhead)
MS = 1e-3  # the profiler's times are microseconds


@CALLBACKS.register("profiler", builtin="trainer.profile", main_only=True)
class Profiler(Callback):
    """Profiles `steps` training steps after WARMUP (trainer.profile; never built when it is 0)."""

    def __init__(self, run_dir: Path, steps: int = 0, stream: Any = None) -> None:
        self.run_dir, self.steps, self.stream = run_dir, steps, stream or sys.stdout
        self.profiler: torch.profiler.profile | None = None
        self.ended = 0  # steps ended under the profiler, warm-up included
        self.first_epoch = self.last_epoch = 0  # epochs (0-based) at the end of the last warm-up / recorded step
        self.cuda = False
        self.report: dict[str, Any] = {}  # what was printed, for tests: reads_per_step, top, trace

    def on_fit_start(self, state: State) -> None:
        if self.profiler is not None or self.report:  # profiled already (fit called again)
            return
        self.cuda = next(state.raw_model.parameters()).device.type == "cuda"
        activity = torch.profiler.ProfilerActivity
        activities = [activity.CPU, *([activity.CUDA] if self.cuda else [])]
        self.profiler = torch.profiler.profile(
            activities=activities, on_trace_ready=self.ready,
            schedule=torch.profiler.schedule(wait=0, warmup=WARMUP, active=self.steps, repeat=1))
        self.profiler.start()

    def on_train_step(self, state: State) -> None:
        if self.profiler is None:
            return
        self.ended += 1
        if self.ended == WARMUP:
            self.first_epoch = state.epoch  # the next step is the first recorded
        self.last_epoch = state.epoch
        self.profiler.step()  # after the last recorded step, calls `ready`
        if self.report:
            self.stop()

    def on_train_end(self, state: State) -> None:
        """A run shorter than WARMUP + steps: what was recorded is reported, in one line more."""
        if self.profiler is None:
            return
        recorded = max(self.ended - WARMUP, 0)
        print(f"dltrain: warning: trainer.profile={self.steps}: the run took only {self.ended} training steps "
              f"({WARMUP} of them warm-up), so {recorded} were profiled", file=sys.stderr, flush=True)
        self.stop()

    def stop(self) -> None:
        profiler, self.profiler = self.profiler, None
        if profiler is not None:
            profiler.stop()  # still recording (a short run): calls `ready` with the steps it has

    def ready(self, profiler: torch.profiler.profile) -> None:
        recorded = min(max(self.ended - WARMUP, 0), self.steps)
        if recorded == 0 or self.report:
            self.report = self.report or {"steps": 0}
            return
        trace = self.run_dir / TRACE
        write_trace(profiler, trace)
        self.report = summary(profiler.key_averages(), recorded, self.cuda)
        self.report["trace"] = trace
        crossed = self.last_epoch != self.first_epoch
        print("\n".join(report_lines(self.report, recorded, trace, self.first_epoch, crossed)), file=self.stream,
              flush=True)


def write_trace(profiler: torch.profiler.profile, path: Path) -> None:
    """The Chrome trace, replaced atomically (torch writes it to a path: a temp folder's, then copied over)."""
    with tempfile.TemporaryDirectory() as folder:
        exported = Path(folder) / TRACE
        profiler.export_chrome_trace(str(exported))
        write_atomic(path, lambda handle: handle.write(exported.read_bytes()))


def summary(events: Any, steps: int, cuda: bool) -> dict[str, Any]:
    """Per-step numbers from the profiler's key averages: the TOP ops by self CPU time (ms per step, share, calls per
    step, self device ms per step), the host reads and (on a GPU) device-to-host copies per step."""
    rows: dict[str, list[float]] = {}  # name -> [self CPU us, calls, self device us]
    for event in events:
        name = "(Python between ops)" if event.key.startswith(STEP_MARK) else event.key
        row = rows.setdefault(name, [0.0, 0.0, 0.0])
        row[0] += event.self_cpu_time_total
        row[1] += event.count
        row[2] += getattr(event, "self_device_time_total", 0.0) if cuda else 0.0
    total = sum(row[0] for row in rows.values()) or 1.0
    top = sorted(rows.items(), key=lambda item: item[1][0], reverse=True)[:TOP]
    reads = rows.get(READ, [0.0, 0.0])[1]
    copies = sum(row[1] for name, row in rows.items() if name.startswith("Memcpy DtoH"))
    return {"top": [(name, cpu * MS / steps, cpu / total, calls / steps, device * MS / steps)
                    for name, (cpu, calls, device) in top],
            "items_per_step": reads / steps, "copies_per_step": copies / steps if cuda else None,
            "reads_per_step": (copies if cuda else reads) / steps,
            "self_cpu_ms_per_step": total * MS / steps, "steps": steps}


def report_lines(report: dict[str, Any], steps: int, trace: Path, epoch: int, crossed: bool) -> list[str]:
    """The printed profile: at most 100 columns."""
    device = report["copies_per_step"] is not None
    head = (f"profile: {steps} training steps after {WARMUP} warm-up steps (from epoch {epoch + 1}); "
            f"self CPU time {report['self_cpu_ms_per_step']:.3f} ms/step")
    lines = [head, f"trace: {trace} (open in ui.perfetto.dev or chrome://tracing)",
             f"  {'top ops by self CPU time':44s} {'ms/step':>9s} {'share':>6s} {'calls/step':>10s}"
             + (f" {'device ms/step':>14s}" if device else "")]
    for name, ms, share, calls, device_ms in report["top"]:
        name = name if len(name) <= 44 else name[:41] + "..."
        lines.append(f"  {name:44s} {ms:9.3f} {share:6.1%} {calls:10.1f}" + (f" {device_ms:14.3f}" if device else ""))
    if device:  # the copies are the reads; .item() of a CPU tensor (Adam's step counters) is none
        lines.append(f"device-to-host reads per step: {report['reads_per_step']:g} (Memcpy DtoH); .item() etc. "
                     f"per step: {report['items_per_step']:g} (CPU tensors too)")
    else:
        lines.append(f"device-to-host reads per step: {report['reads_per_step']:g} ({READ}: .item(), float(), "
                     "bool() of a tensor)")
    if crossed:
        lines.append("note: the profiled steps cross an epoch's end: they include its validation pass and callbacks")
    return lines
