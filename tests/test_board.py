"""`dltrain runs` and `dltrain board` as a user meets them: what they open without a folder (the newest sweep, even
after a single run), and TensorBoard beside another one (a free port, said in one line), on a taken --port, and
with --bind_all; real runs, a real TensorBoard read over HTTP."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import cli

QUICK = ["trainer.max_epochs=1", "model.hidden=[16]", "trainer.log_every_n_steps=0"]
SWEPT = ["optim=adam", "optim=sgd"]


@pytest.fixture(scope="module")
def first_table(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A single run with Hydra's own folder (outputs/), and `dltrain runs` while it is the only run."""
    cwd = tmp_path_factory.mktemp("work")
    done = cli(QUICK, cwd=cwd)
    assert done.returncode == 0, done.stderr
    (run,) = (cwd / "outputs").glob("*/*")
    return cwd, run.relative_to(cwd), cli(["runs"], cwd=cwd)


@pytest.fixture(scope="module")
def sweep_then_run(first_table) -> tuple[Path, Path, Path]:
    """A single run, then a sweep, then another single run, with Hydra's own folders (outputs/, multirun/)."""
    cwd, _, _ = first_table
    for args in (["-m", "optim=sgd,adam", *QUICK], QUICK):
        done = cli(args, cwd=cwd)
        assert done.returncode == 0, done.stderr
    (sweep,) = (cwd / "multirun").glob("*/*")
    first, later = sorted((cwd / "outputs").glob("*/*"))
    return cwd, sweep.relative_to(cwd), later.relative_to(cwd)


def test_runs_takes_the_newest_run_when_there_is_no_sweep(first_table) -> None:
    _, run, table = first_table
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith(f"1 run(s) in {run} ") and "newer" not in table.stdout


def test_runs_takes_the_newest_sweep_and_names_a_later_single_run(sweep_then_run) -> None:
    cwd, sweep, later = sweep_then_run
    table = cli(["runs"], cwd=cwd)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"2 run(s) in {sweep} ") and lines[1].split()[:2] == ["optim", "status"]
    assert lines[-1] == f"(a single run is newer: dltrain runs {later})"
    assert "newest sweep under ./multirun" in " ".join(cli(["runs", "--help"], cwd=cwd).stdout.split())


def start_board(args: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """`dltrain board ARGS` in the background, and its first line, once it has said where it serves."""
    exe = Path(sys.executable).parent / "dltrain"
    server = subprocess.Popen([str(exe), "board", *args], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in server.stdout:  # TensorBoard's notes come first, on stderr
        seen.append(line)
        if line.startswith("TensorBoard on "):
            return server, "".join(seen)
    server.wait(timeout=30)
    pytest.fail(f"dltrain board {' '.join(args)} exited {server.returncode}: {''.join(seen)}")


def runs_served(port: int, host: str = "localhost") -> list[str]:
    deadline = time.monotonic() + 60
    while True:  # TensorBoard lists the runs once it has loaded the folder
        served = json.loads(urllib.request.urlopen(f"http://{host}:{port}/data/runs", timeout=5).read())
        if served or time.monotonic() > deadline:
            return sorted(served)
        time.sleep(0.5)


def reachable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(5)
        return sock.connect_ex((host, port)) == 0


def test_board_opens_the_newest_sweep_beside_another_board_and_on_every_interface(sweep_then_run) -> None:
    cwd, sweep, later = sweep_then_run
    first, said = start_board([], cwd)
    servers = [first]
    try:
        line = said.splitlines()[-1]
        match = re.fullmatch(rf"TensorBoard on {re.escape(str(sweep))} \(a single run is newer: dltrain board "
                             rf"{re.escape(str(later))}\) at http://localhost:(\d+)/ \(Ctrl\+C stops it; --bind_all .*\)",
                             line)
        assert match, line
        port = int(match.group(1))
        assert runs_served(port) == SWEPT
        assert "TensorFlow installation not found" not in said

        second, said = start_board([str(sweep)], cwd)  # a second board while the first is open: the next free port
        servers.append(second)
        other = int(re.search(r"at http://localhost:(\d+)/", said).group(1))
        assert other != port and runs_served(other) == SWEPT

        taken = cli(["board", str(sweep), "--port", str(port)], cwd=cwd, timeout=120)
        assert taken.returncode == 1 and taken.stdout == ""
        assert taken.stderr.splitlines()[-1] == (f"dltrain: error: port {port} is in use (another TensorBoard?); "
                                                 "give another --port, or leave it out to take a free one")

        everywhere, said = start_board([str(sweep), "--bind_all"], cwd)
        servers.append(everywhere)
        wide = int(re.search(r"at http://[^:]+:(\d+)/", said).group(1))
        # 127.0.0.2 is this machine too, but not the address `localhost` serves on: only --bind_all answers there
        assert reachable("127.0.0.2", wide) and not reachable("127.0.0.2", port)
        assert runs_served(wide, "127.0.0.2") == SWEPT
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
