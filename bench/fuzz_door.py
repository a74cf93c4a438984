"""Malformed input, generated mechanically, against the real `dltrain` command: every key of every YAML in conf/
gets negative, zero, huge, wrong-type, empty, NaN, string-for-boolean and missing-interpolation values, plus the
hand-written cases of issue 17 (sweeps, --config-dir, projects, predict inputs). Each case is one process.

A case is good when dltrain refuses it with one `dltrain: error:` line and a non-zero exit, or accepts a value
that is valid (the run's config.yaml holds what was asked). It is counted as
  traceback  when "Traceback (most recent call last)" reaches the terminal;
  silent     when the run exited 0 although config.yaml differs from what was asked, or the value is bad by
             construction (a word for a number, NaN, a word for a boolean, a missing interpolation) and no
             line named the key.
Not in `make test` (it runs for many minutes). Usage:
    python bench/fuzz_door.py [--limit N] [--only SUBSTRING] [--json out.json] [--jobs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DLTRAIN = str(Path(sys.executable).parent / "dltrain")
QUICK = ["trainer.max_epochs=1", "trainer.threads=1"]  # an accepted case trains one short epoch
# What each choice needs beside it to train at all (files of examples/, a task, data of the right kind).
BASE = {
    "data=csv": ["data.path=examples/iris.csv", "data.target=species"],
    "data=text": ["data.path=examples/coriolanus.txt", "model=lstm"],
    "data=adding": ["model=lstm", "model.hidden_size=8"],
    "data=sine": ["model=lstm", "model.hidden_size=8"],
    "data=digit_rows": ["model=lstm", "model.hidden_size=8"],
    "data=diabetes": [],
    "model=rnn": ["data=adding"], "model=lstm": ["data=adding"], "model=gru": ["data=adding"],
    "model=autoencoder": ["task=reconstruction"],
    "model=gan": ["task=adversarial", "optim=adam"],
}
SKIP_CHOICES = {"data=arrays", "data=image_folder", "data=imdb", "data=cifar10", "data=fashion_mnist",
                "trainer=gpu", "trainer=ddp"}  # need user files, a download, a GPU or several processes
BAD_BY_CONSTRUCTION = {"word", "nan", "bool_word", "interpolation"}


@dataclass
class Case:
    name: str
    args: list[str]
    kind: str                 # the mutation (negative, zero, huge, word, empty, nan, bool_word, interpolation, ...)
    key: str = ""             # the key it targets ("" for hand-written cases)
    asked: object = None      # the value asked for, as YAML reads it
    cwd: str = ""
    expect_refusal: bool = False  # hand-written: the issue says this must be refused
    outcome: str = ""
    detail: str = field(default="", repr=False)


def leaves(node: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() if k not in ("defaults", "name") for leaf in leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], node)]


def mutations(value: object) -> list[tuple[str, str, object]]:
    """(kind, override text, value as YAML reads it) for one key, chosen by the type of its default."""
    out = [("word", "abc", "abc"), ("empty", "", None), ("interpolation", "${nope.missing}", None)]
    if isinstance(value, bool):
        return out + [("bool_word", "off", "off"), ("bool_word", "maybe", "maybe"), ("zero", "0", 0)]
    if isinstance(value, (int, float)) or value is None:
        out += [("negative", "-3", -3), ("zero", "0", 0), ("huge", "1e30", 1e30), ("nan", "nan", float("nan")),
                ("huge_int", "9" * 400, int("9" * 400))]
    if isinstance(value, list):
        out += [("list_negative", "[-1]", [-1]), ("list_zero", "[0]", [0]), ("list_empty", "[]", [])]
    return out


def generated_cases(per_key: int) -> list[Case]:
    """`per_key` mutations of every key of every choice (all when 0), rotating through the kinds from key to key
    so that every kind meets every group."""
    cases, turn = [], 0
    for path in sorted((REPO / "conf").glob("*/*.yaml")):
        group, choice = path.parent.name, path.stem
        if group in ("experiment", "hydra") or f"{group}={choice}" in SKIP_CHOICES:
            continue
        node = yaml.safe_load(path.read_text()) or {}
        prefix = "" if node.get("defaults") and "# @package _global_" in path.read_text() else f"{group}."
        select = [f"{group}={choice}", *BASE.get(f"{group}={choice}", [])]
        for key, value in leaves(node):
            kinds = mutations(value)
            turn += 1
            picked = kinds if not per_key else [kinds[(turn + i) % len(kinds)] for i in range(min(per_key, len(kinds)))]
            for kind, text, asked in picked:
                full = f"{prefix}{key}"
                cases.append(Case(f"{group}={choice} {full}={text}", [*select, f"{full}={text}"], kind, full, asked))
    return cases


def hand_cases(tmp: Path) -> list[Case]:
    """The issue's examples verbatim, and the sweep syntax, --config-dir, projects and predict inputs."""
    refuse = [
        ["optim.lr=-1", "model.dropout=1.5", "early_stopping.patience=-3"],
        ["model.hidden=256"], ["early_stopping.monitor=val/accuracy"], ["early_stopping.enabled=off"],
        ["early_stopping.enabled=maybe"], ["early_stopping.enabled=sometimes"],
        ["model=cnn", "model.kernel_size=-3"], ["model=cnn", "model.kernel_size=0"], ["model=cnn", "model.stride=0"],
        ["model=cnn", "model.pool_size=0"], ["model=cnn", "model.head=[-1]"], ["model=cnn", "model.head=[0]"],
        ["model=lstm", "data=adding", "model.embed_dim=-1"], ["model=gan", "task=adversarial", "model.g_hidden=[0]"],
        ["-m", "optim.lr=0.1,0.2", "optim.lr=0.3"], ["-m", "optim=sgd,adam", "hydra.sweep.dir="],
        ["-m", "optim.lr=glob(*)"], ["-m", "trainer.seed=range(5,0,1)"], ["-m", "optim.lr=interval(0.1,1)"],
        ["trainer.seed=" + "9" * 400], ["optim.lr=${optim.lr}"], ["optim.lr=${nope}"],
        ["--config-dir", str(tmp / "missing")], ["--config-dir", ""], ["--config-dir", str(tmp / "a_file.txt")],
        ["data=csv", "data.path=examples/iris.csv", "data.target=no_such_column"],
        ["data=csv", "data.path=no/such.csv", "data.target=species"],
        ["trainer.resume=" + str(tmp / "a_file.txt")],
        ["hydra.run.dir=/proc/dltrain-cannot-write"],
    ]
    return [Case("verbatim " + " ".join(a), a, "verbatim", expect_refusal=True) for a in refuse]


def predict_cases(tmp: Path, run_dir: Path | None) -> list[Case]:
    """Hostile inputs to `dltrain predict` on a real digits run (made once by the caller)."""
    if run_dir is None:
        return []
    import numpy as np

    files = {"empty.npy": np.zeros((0, 1, 8, 8), np.float32), "huge_values.npy": np.full((2, 64), 1e300)}
    for name, array in files.items():
        np.save(tmp / name, array)
    (tmp / "text.pt").write_text("not a checkpoint")
    return [Case(f"predict {name}", ["predict", str(run_dir), str(tmp / name)], "predict", expect_refusal=True)
            for name in files]


def run_case(case: Case, tmp: Path, timeout: float) -> Case:
    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    asked = {a.split("=", 1)[0].lstrip("+~") for a in case.args}  # the case's own keys win over the defaults here
    extra = [a for a in [*QUICK, f"hydra.run.dir={run_dir}"] if a.split("=", 1)[0] not in asked]
    args = case.args if case.args[:1] in (["predict"], ["-m"]) or case.args[:1] == ["--config-dir"] else \
        [*case.args, *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    started = time.monotonic()
    try:
        proc = subprocess.run([DLTRAIN, *args], cwd=case.cwd or REPO, capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        case.outcome, case.detail = "timeout", f"ran past {timeout:.0f} s (accepted and training)"
        return case
    case.detail = f"exit {proc.returncode} in {time.monotonic() - started:.1f}s: " + proc.stderr.strip()[-300:]
    case.outcome = judge(case, proc, run_dir)
    return case


def judge(case: Case, proc: subprocess.CompletedProcess, run_dir: Path) -> str:
    if "Traceback (most recent call last)" in proc.stderr + proc.stdout:
        return "traceback"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode != 0:
        return "refused" if any(line.startswith("dltrain:") for line in lines) else "crashed_no_line"
    if case.expect_refusal:
        return "silent"
    said = case.key and any(case.key in line for line in lines)
    if case.kind in BAD_BY_CONSTRUCTION and not said:
        return "silent"
    saved = run_dir / "config.yaml"
    if saved.is_file() and case.key:
        node = yaml.safe_load(saved.read_text())
        for part in case.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not same(node, case.asked) and not said:
            return "silent"
    return "accepted"


def same(saved: object, asked: object) -> bool:
    if isinstance(asked, float) and isinstance(saved, (int, float)):
        return saved == asked or (asked != asked and saved != saved)
    return saved == asked or str(saved) == str(asked)


def a_digits_run(tmp: Path) -> Path | None:
    run_dir = tmp / "digits-run"
    proc = subprocess.run([DLTRAIN, *QUICK, "model.hidden=[8]", f"hydra.run.dir={run_dir}"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    return run_dir if proc.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="at most this many cases (0 = all)")
    parser.add_argument("--only", default="", help="cases whose name contains this")
    parser.add_argument("--per-key", type=int, default=1, help="mutations per key (0 = every one: ~1400 cases)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per case")
    parser.add_argument("--json", type=Path, help="write every case's outcome here")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "a_file.txt").write_text("hello\n")
        cases = hand_cases(tmp) + predict_cases(tmp, a_digits_run(tmp)) + generated_cases(opts.per_key)
        cases = [c for c in cases if opts.only in c.name][: opts.limit or None]
        with ThreadPoolExecutor(opts.jobs) as pool:
            done = list(pool.map(lambda c: run_case(c, tmp, opts.timeout), cases))
    counts: dict[str, int] = {}
    for case in done:
        counts[case.outcome] = counts.get(case.outcome, 0) + 1
        if case.outcome in ("traceback", "silent", "crashed_no_line", "timeout"):
            print(f"{case.outcome:10s} {case.name}\n           {case.detail.splitlines()[-1] if case.detail else ''}")
    print(f"{len(done)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if opts.json:
        opts.json.write_text(json.dumps([asdict(c) for c in done], indent=1, default=str))
    sys.exit(1 if counts.get("traceback") or counts.get("silent") else 0)


if __name__ == "__main__":
    main()
