"""Kill -9 torture: kill a small training run at random moments and inside its file writes, resume it, and check
that nothing was lost and nothing ran twice: the resumed run ends with the uninterrupted run's weights (bitwise),
its best.pt holds metrics.json's best epoch, and no temp file is left.

    .venv/bin/python bench/torture.py                  # 20 trials
    .venv/bin/python bench/torture.py --trials 3 --seed 1

Trials alternate two kinds. "time": SIGKILL from this process at a random moment of the training phase (from
the run's config.yaml until a little past the moment an uninterrupted run writes metrics.json). "write": the
child kills itself (SIGKILL) at a random one of its atomic writes, at a random phase: before it starts, with the
temp file written but not renamed, or just after the rename (for last.pt of an improving epoch: the window
before best.pt). The child learns where it is by a patch of `write_atomic` that this script applies inside the
child process and that logs every write's start and end to a file (production code has no test hooks); the log
also tells where each "time" kill landed. A killed run is resumed with `dltrain ... trainer.resume=DIR`, or
started again in its directory when it died before its first last.pt. TensorBoard duplicates (a scalar tag with
two values at one step) are counted and reported, not judged: that is a separate item.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# dropout (RNG state), adam (optimizer moments) and a step schedule (epoch counter) all have to survive a resume;
# lr 0.03 makes epochs 4 and 8 not improve val/loss, so best.pt and last.pt differ at the end and on the way
ARGS = ["data=digits", "model.hidden=[32]", "model.dropout=0.2", "optim=adam", "optim.lr=0.03", "sched=step",
        "sched.boundaries=[4]", "trainer.max_epochs=8", "trainer.log_every_n_steps=0", "early_stopping.patience=100"]
PHASES = ("enter", "written", "renamed")  # where a "write" trial kills: see the module docstring


def child(args: list[str]) -> None:
    """Run `dltrain ARGS` with every atomic write logged (and, if asked, a SIGKILL at write K, phase P)."""
    log = os.open(os.environ["TORTURE_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    nth, _, phase = (os.environ.get("TORTURE_KILL") or "0:").partition(":")
    import dltrain.core.checkpoint
    import dltrain.core.files

    original, count = dltrain.core.files.write_atomic, [0]

    def note(text: str) -> None:
        os.write(log, f"{time.monotonic():.6f} {text}\n".encode())  # unbuffered: it survives the kill

    def die_at(n: int, where: str) -> None:
        if n == int(nth) and where == phase:
            note(f"kill {n} {where}")
            os.kill(os.getpid(), signal.SIGKILL)

    def traced(path: Path, write: Any) -> None:
        count[0] += 1
        n = count[0]
        note(f"enter {n} {path.name}")
        die_at(n, "enter")

        def body(handle: Any) -> None:
            write(handle)
            die_at(n, "written")

        original(path, body)
        die_at(n, "renamed")
        note(f"leave {n} {path.name}")

    dltrain.core.files.write_atomic = dltrain.core.checkpoint.write_atomic = traced  # checkpoint imported it by name
    from dltrain.cli.main import main

    sys.argv = ["dltrain", *args]
    main()


def read_log(path: Path) -> list[tuple[float, str, int, str]]:
    """(time, event, write number, file name) per line of a child's write log."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        stamp, event, n, name = line.split()
        rows.append((float(stamp), event, int(n), name))
    return rows


def landed(rows: list[tuple[float, str, int, str]]) -> str:
    """Where a kill landed, from the log: inside a write of NAME (at its start, with the temp file written but not
    renamed, just after the rename, or, for a kill from outside, somewhere between its start and end), or after
    the last write that finished."""
    if not rows:
        return "before any write"
    _, event, n, name = rows[-1]
    if event == "kill":  # the child's own: the line before is the write's "enter"
        return f"inside {rows[-2][3]} write ({name})"
    return f"inside {name} write" if event == "enter" else f"after {name} write {n}"


def start_child(run_dir: Path, log: Path, kill: str = "") -> subprocess.Popen:
    env = {**os.environ, "TORTURE_LOG": str(log), "TORTURE_KILL": kill, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, __file__, "--child", *ARGS, f"hydra.run.dir={run_dir}"], env=env,
                            cwd=run_dir.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def reference(work: Path, timeout: float) -> dict[str, Any]:
    """The uninterrupted run, through the same child (without a kill): its files, writes and training time."""
    run_dir, log = work / "reference", work / "reference.log"
    started = time.monotonic()
    proc = start_child(run_dir, log)
    _, err = proc.communicate(timeout=timeout)
    ended = time.monotonic()
    if proc.returncode != 0:
        sys.exit(f"torture: the uninterrupted run failed:\n{err.decode()}")
    rows = read_log(log)
    fit_start = next(t for t, event, _, name in rows if event == "leave" and name == "config.yaml")
    fit_end = next(t for t, event, _, name in rows if event == "enter" and name == "metrics.json")
    writes = sorted({(n, name) for _, _, n, name in rows})
    return {"dir": run_dir, "writes": writes, "train_s": fit_end - fit_start, "total_s": ended - started}


def kill_at_random_time(run_dir: Path, log: Path, window: float, rng: random.Random, timeout: float) -> str:
    """Start the run, wait for its training phase, SIGKILL it after a random delay; where did it land?"""
    proc = start_child(run_dir, log)
    deadline = time.monotonic() + timeout
    while not any(e == "leave" and name == "config.yaml" for _, e, _, name in read_log(log)):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    time.sleep(rng.uniform(0, window))
    proc.send_signal(signal.SIGKILL)  # a no-op when the run already ended
    proc.wait(timeout=timeout)
    return "finished before the kill" if proc.returncode == 0 else landed(read_log(log))


def kill_in_a_write(run_dir: Path, log: Path, writes: list[tuple[int, str]], rng: random.Random,
                    timeout: float) -> str:
    n, _ = rng.choice(writes)
    proc = start_child(run_dir, log, f"{n}:{rng.choice(PHASES)}")
    proc.wait(timeout=timeout)
    return landed(read_log(log)) if proc.returncode == -signal.SIGKILL else f"exit {proc.returncode}, no kill"


def dltrain(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "dltrain"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def recover(run_dir: Path, timeout: float) -> str:
    """What a user does after the kill: resume, or start again when no last.pt was written yet."""
    if not (run_dir / "last.pt").is_file():
        done = dltrain([*ARGS, f"hydra.run.dir={run_dir}"], run_dir.parent, timeout)
        return "restarted" if done.returncode == 0 else f"restart failed: {done.stderr.strip()[-300:]}"
    done = dltrain([*ARGS, f"trainer.resume={run_dir}"], run_dir.parent, timeout)
    if done.returncode == 0:
        return "resumed"
    if done.returncode == 2 and "already trained" in done.stderr:  # the kill came after metrics.json
        return "was complete"
    return f"resume failed ({done.returncode}): {done.stderr.strip()[-300:]}"


def problems(run_dir: Path, ref: Path) -> list[str]:
    """How the recovered run differs from the uninterrupted one (nothing, ideally)."""
    import torch

    from dltrain.core import checkpoint

    found = []
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, ref))
    for key in ("status", "epochs", "best_epoch", "best", "test"):
        if ours.get(key) != theirs.get(key):
            found.append(f"metrics.json {key}: {ours.get(key)} != {theirs.get(key)}")
    for name in ("last.pt", "best.pt"):
        a, b = checkpoint.load(run_dir / name)["model"], checkpoint.load(ref / name)["model"]
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            found.append(f"{name} weights differ from the uninterrupted run's")
    if checkpoint.load(run_dir / "best.pt")["epoch"] != ours.get("best_epoch"):
        found.append(f"best.pt holds epoch {checkpoint.load(run_dir / 'best.pt')['epoch']}, "
                     f"metrics.json names {ours.get('best_epoch')}")
    found += [f"temp file left: {p.name}" for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    return found


def tensorboard_duplicates(run_dir: Path) -> int:
    """Scalar (tag, step) pairs written more than once across the run's event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    seen: Counter = Counter()
    for path in run_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):  # add_scalar's; HParams' session records are per process
                    seen[(value.tag, event.step)] += 1
    return sum(count - 1 for count in seen.values() if count > 1)


def trial(i: int, work: Path, ref: dict[str, Any], rng: random.Random, timeout: float) -> dict[str, Any]:
    run_dir, log = work / f"trial{i:02d}", work / f"trial{i:02d}.log"
    kind = "time" if i % 2 == 0 else "write"
    if kind == "time":  # the training phase: from config.yaml to metrics.json, and a little past it
        where = kill_at_random_time(run_dir, log, ref["train_s"] * 1.05, rng, timeout)
    else:
        where = kill_in_a_write(run_dir, log, ref["writes"], rng, timeout)
    outcome = recover(run_dir, timeout)
    found = problems(run_dir, ref["dir"]) if outcome in ("resumed", "restarted", "was complete") else [outcome]
    return {"trial": i, "kind": kind, "landed": where, "outcome": outcome, "problems": found,
            "tb_duplicates": tensorboard_duplicates(run_dir)}


def summary(results: list[dict[str, Any]], ref: dict[str, Any], wanted: int, elapsed: float) -> bool:
    checkpoint_kills = [r for r in results if r["landed"].startswith(("inside last.pt", "inside best.pt"))]
    passed = [r for r in results if not r["problems"]]
    print(f"\nreference: {len(ref['writes'])} writes, training phase {ref['train_s']:.2f} s of "
          f"{ref['total_s']:.2f} s; {len(results)} of {wanted} trials in {elapsed:.0f} s")
    for kind in ("time", "write"):
        mine = [r for r in results if r["kind"] == kind]
        print(f"  {kind:5s} kills: {len(mine)}, landed: {dict(Counter(r['landed'] for r in mine))}")
        print(f"  {kind:5s} recovery: {dict(Counter(r['outcome'] for r in mine))}")
    phases = Counter(r["landed"].split("(")[-1].rstrip(")") for r in checkpoint_kills)
    print(f"kills inside a checkpoint write (last.pt/best.pt): {len(checkpoint_kills)} ({dict(phases)}); inside "
          f"any write: {sum(r['landed'].startswith('inside') for r in results)}")
    print(f"TensorBoard duplicate (tag, step) values after recovery: "
          f"{[r['tb_duplicates'] for r in results]} (reported, not judged)")
    print(f"{len(passed)}/{len(results)} trials passed")
    return len(passed) == len(results) == wanted


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="kill-and-resume trials (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times and places")
    parser.add_argument("--workdir", type=Path, default=None, help="where the runs go (default: a temp folder)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds allowed to each process")
    parser.add_argument("--budget", type=float, default=1800, help="start no trial after this many seconds")
    opts = parser.parse_args()
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="dltrain-torture-"))
    work.mkdir(parents=True, exist_ok=True)
    rng, started = random.Random(opts.seed), time.monotonic()
    ref = reference(work, opts.timeout)
    results = []
    for i in range(opts.trials):
        if time.monotonic() - started > opts.budget:
            print(f"torture: time budget of {opts.budget:.0f} s spent; stopping after {i} trials")
            break
        results.append(trial(i, work, ref, rng, opts.timeout))
        r = results[-1]
        print(f"trial {i:2d} {r['kind']:5s} killed {r['landed']:34s} -> {r['outcome']:12s} "
              f"{'ok' if not r['problems'] else '; '.join(r['problems'])}", flush=True)
    ok = summary(results, ref, opts.trials, time.monotonic() - started)
    print(f"runs in {work}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
