"""The benchmark script still runs against the current engine (no timing is asserted: speed lives in bench/)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_bench_script_runs_a_small_case(tmp_path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "engine_vs_loop.py"), "--device", "cpu",
                           "--case", "overhead", "--train-size", "256", "--epochs", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())["results"][0]
    assert result["case"] == "overhead" and result["samples"] == 256
    assert result["engine_s"] > 0 and result["loop_s"] > 0
    # the engine's only extra ops per step: train accuracy (argmax, eq, sum), the metric vector (stack) and its
    # one add_, less the loop's ones_like backward seed (+4); plus per-epoch ops spread over these 8 steps (the
    # sums' zeros and read, the best epoch's weight copy: about +2.3 per step here)
    loop, engine = result["loop_ops_per_step"], result["engine_ops_per_step"]
    assert loop > 20 and loop + 4 <= engine <= loop + 7


def test_threads_bench_runs_a_small_case(tmp_path) -> None:
    out = tmp_path / "threads.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "threads.py"), "--case", "mlp_digits", "--condition",
                           "quiet", "--epochs", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    (result,) = report["results"]
    assert result["case"] == "mlp_digits" and result["samples"] == 1024 and result["rule_threads"] == 1
    counts = sorted({1, 2, report["default_threads"]})
    assert sorted(int(t) for t in result["s_per_epoch"]) == counts and all(result["s_per_epoch"].values())
    assert "| mlp_digits | quiet |" in proc.stdout
