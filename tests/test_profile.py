"""`trainer.profile=N`: a trace in the run folder, the top ops and the host reads per step printed, the run trains
on as it would have (bitwise), profile=0 builds nothing, a bad value is one line at the door."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import FAST, parse, run


def test_profile_writes_a_trace_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dltrain.core.profiling import TRACE, WARMUP
    from dltrain.tools.run_diff import first_difference, load_record

    report = run([*FAST, "trainer.profile=5"], tmp_path / "profiled")
    out = capsys.readouterr().out
    trace = json.loads((tmp_path / "profiled" / TRACE).read_text())
    assert isinstance(trace["traceEvents"], list) and trace["traceEvents"]
    assert f"profile: 5 training steps after {WARMUP} warm-up steps (from epoch 1)" in out
    assert "top ops by self CPU time" in out and "aten::" in out
    assert "cross an epoch" not in out  # 17 steps per epoch (1078 samples, batch 64) > 3 + 5
    # The engine's step reads nothing back (SGD, fp32, log_every_n_steps=0): no .item(), float() or bool()
    reads = re.search(r"device-to-host reads per step: (\S+)", out)
    assert reads and float(reads.group(1)) == 0.0, out
    table = out.split("top ops by self CPU time")[1].split("device-to-host")[0].strip().splitlines()[1:]
    assert len(table) == 10 and all(re.search(r"\d%", line) for line in table)
    assert max(len(line) for line in out.splitlines() if line.startswith(("profile:", "  "))) <= 100
    # It trains on normally: the same history as a run without the profiler, bitwise, and all its epochs
    run(FAST, tmp_path / "plain")
    assert report["epochs"] == 3
    assert first_difference(load_record(tmp_path / "profiled"), load_record(tmp_path / "plain")) is None
    assert not (tmp_path / "plain" / TRACE).exists()  # profile=0: no profiler, no trace


def test_profile_across_epochs_and_a_run_too_short(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dltrain.core.profiling import TRACE

    run([*FAST, "trainer.max_epochs=2", "trainer.profile=20"], tmp_path / "across")  # 3 + 20 > 17 steps
    captured = capsys.readouterr()
    assert "profile: 20 training steps" in captured.out
    assert "cross an epoch's end" in captured.out
    run([*FAST, "trainer.max_epochs=1", "trainer.profile=50"], tmp_path / "short")  # 17 steps in all
    captured = capsys.readouterr()
    assert "the run took only 17 training steps (3 of them warm-up), so 14 were profiled" in captured.err
    assert "profile: 14 training steps" in captured.out
    assert json.loads((tmp_path / "short" / TRACE).read_text())["traceEvents"]


def test_adam_reads_its_step_counters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """torch's Adam reads each parameter's step counter with .item() (optimizer._get_value): on a CPU it takes its
    single-tensor path (foreach is the default only for CUDA tensors), one read per parameter tensor per step;
    model.hidden=[32] has 2 Linear layers, 4 tensors, so 4 reads per step. The counters live on the CPU (not
    capturable, not fused): on a GPU (foreach: 2 reads per tensor, its two bias corrections) they wait for nothing."""
    run([*FAST, "optim=adam", "trainer.profile=4"], tmp_path)
    reads = re.search(r"device-to-host reads per step: (\S+)", capsys.readouterr().out)
    assert reads and float(reads.group(1)) == 4


@pytest.mark.parametrize("value, words", [("-1", "trainer.profile=-1 must be >= 0"), ("abc", "trainer.profile")])
def test_a_bad_value_is_one_line(value: str, words: str) -> None:
    from dltrain.core.registry import ConfigError

    with pytest.raises(ConfigError) as err:
        parse([f"trainer.profile={value}"])
    assert words in str(err.value) and "\n" not in str(err.value)
