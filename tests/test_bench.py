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


def test_lr_find_bench_runs_a_small_case(tmp_path) -> None:
    out = tmp_path / "lr_find.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "lr_find.py"), "--cases", "digits", "--seeds", "1",
                           "--num", "4", "--epochs", "1", "2", "--full-epochs", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (seed,) = json.loads(out.read_text())["cases"]["digits"]
    rates = [1e-5, 4.64e-4, 0.0215, 1.0]  # Probe(num=4).rates()
    found = seed["found"]
    assert found["lr-find E=1"]["lr"] in rates and found["optim default"]["lr"] == 0.1
    # 4 rates x 17 steps per epoch (1078 digits in the train split, batch 64); the ramp's budget: the first's
    assert found["lr-find E=1"]["steps"] == 4 * 17 and found["lr-find E=2"]["steps"] == 8 * 17
    assert 11 < found["ramp same 2.x"]["steps"] <= 68 and 11 < found["ramp default 1.x"]["steps"] <= 100
    finite = [v for v in seed["full"] if v is not None]
    assert seed["best"] in rates and seed["full"][rates.index(seed["best"])] == min(finite)
    assert all(f["grid"] in rates and f["regret"] >= 0 for f in found.values())
    assert "| digits | lr-find E=1 | " in proc.stdout and "| digits | full-training best | " in proc.stdout
