"""Ctrl-C and SIGTERM stop a run with one line and the signal's exit code, keeping the last complete epoch's
checkpoint, from which the run resumes; under DDP no worker is left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dltrain.core import checkpoint
from tests.conftest import run

LONG = ["model.hidden=[32]", "trainer.max_epochs=500", "trainer.log_every_n_steps=0", "early_stopping=none",
        "hydra.run.dir=run", "trainer.device=cpu"]


def start_and_signal(tmp_path: Path, sig: int, extra: list[str] = ()) -> tuple[subprocess.CompletedProcess, list]:
    exe = Path(sys.executable).parent / "dltrain"
    proc = subprocess.Popen([str(exe), *LONG, *extra], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "last.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)  # Ctrl-C hits the whole group
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), children


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl_c", "sigterm"])
def test_a_signal_stops_with_one_line_and_the_run_resumes(tmp_path, sig: int, code: int) -> None:
    result, _ = start_and_signal(tmp_path, sig)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltrain: interrupted at epoch "), result.stderr
    assert f"resume with: dltrain trainer.resume={tmp_path / 'run'}" in lines[0] or "trainer.resume=run" in lines[0]
    epoch = checkpoint.load(tmp_path / "run" / "last.pt")["epoch"]
    assert f"at epoch {epoch}/500" in lines[0]
    resumed = run([*LONG[:-2], f"trainer.max_epochs={epoch + 1}", f"trainer.resume={tmp_path / 'run'}"],
                  tmp_path / "run")  # in this process: what is tested is the signalled CLI run and its checkpoint
    assert resumed["status"] == "completed" and resumed["epochs"] == epoch + 1, resumed
    assert checkpoint.load(tmp_path / "run" / "last.pt")["epoch"] == epoch + 1


def test_sigterm_to_a_ddp_parent_stops_its_workers(tmp_path) -> None:
    result, children = start_and_signal(tmp_path, signal.SIGTERM, ["trainer.devices=2", "data.batch_size=50"])
    assert result.returncode == 143, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltrain: interrupted at epoch"), result.stderr[-2000:]
    time.sleep(1)
    for pid in children:  # the elastic agent's workers are gone too
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)], ids=["ctrl_c", "sigterm"])
def test_a_signal_amid_a_checkpoint_write_is_still_one_line(tmp_path, sig: str, code: int) -> None:
    """The signal lands inside torch.save's writes of epoch 2's last.pt (torch's zip writer then raises its own
    "unexpected pos" RuntimeError over the interrupt): the same one line and exit code, epoch 1 kept whole."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "DLTRAIN_TEST_SAVE": "3",
           "DLTRAIN_TEST_SIGNAL": sig}
    result = subprocess.run([sys.executable, "-c", "import tests.faults as f; f.signal_inside_save_cli()", *LONG],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltrain: interrupted at epoch 1/500"), result.stderr
    assert checkpoint.load(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("sig, code, replace", [("SIGINT", 130, ""), ("SIGTERM", 143, ""), ("SIGINT", 130, "1")],
                         ids=["ctrl_c_swallowed", "sigterm_swallowed", "ctrl_c_turned_into_an_error"])
def test_a_signal_a_library_swallows_still_stops_the_run(tmp_path, sig: str, code: int, replace: str) -> None:
    """A signal during the build that a library's bare `except:` swallows (training would run all 500 epochs), or
    turns into its own error (a traceback, exit 1): the run stops before its first epoch, with the one line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "DLTRAIN_TEST_SIGNAL": sig,
           "DLTRAIN_TEST_REPLACE": replace}
    result = subprocess.run([sys.executable, "-c", "import tests.faults as f; f.swallowed_signal_cli()", *LONG],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == code, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"dltrain: interrupted before the first epoch ended; nothing saved in {tmp_path / 'run'}"], result.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_signal_waits_for_the_end_of_a_deferred_block(monkeypatch) -> None:
    """torch's import runs in `signals.deferred()`: a Ctrl-C then lands after the import, not inside it."""
    from dltrain.run import signals

    monkeypatch.setattr(signals, "RECEIVED", [])
    finished = False
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # an earlier in-process DDP test may leave
    try:  # torch elastic's handler installed
        with pytest.raises(KeyboardInterrupt):
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the handler runs here and only remembers the signal
                finished = True
        assert finished and signals.RECEIVED == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler before the block is back
    finally:
        signal.signal(signal.SIGINT, before)
