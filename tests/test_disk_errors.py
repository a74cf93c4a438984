"""A full disk, a read-only or immutable folder, a run folder deleted mid-run: one line naming the path and the
cause, a non-zero exit, the last complete checkpoint intact, and the run resumes once the disk has room.

CI runs as root, where file permissions prove nothing: the errors are injected into the child process
(tests/faults.py), and where root allows it they are also made for real (a small tmpfs that fills, `chattr +i`)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dltrain.core import checkpoint
from dltrain.core.files import write_atomic
from dltrain.run import resuming
from tests.conftest import cli
from tests.conftest import run as train  # `run` names a run folder here

REPO = Path(__file__).resolve().parents[1]
RUN = ["data=digits", "model=mlp", "model.hidden=[32]", "trainer.max_epochs=3", "trainer.log_every_n_steps=0",
       "early_stopping=none", "trainer.device=cpu"]


def with_fault(fault: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`dltrain ARGS` in a child process whose writes fail as `fault` (a function of tests/faults.py) arranges."""
    code = f"import tests.faults as f; f.{fault}()"
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=full_env)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dltrain: error: "), result.stderr
    return lines[0]


def resumes_to_the_end(tmp_path: Path, run: Path, line: str) -> None:
    """With the disk fixed, the command that `line` prints after `resume with:`, pasted as is, finishes the run: the
    3 epochs of its own overrides, completed, no temp file left."""
    import shlex

    words = shlex.split(line.split("resume with: ", 1)[1])
    assert words[0] == "dltrain", line
    again = cli(words[1:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert checkpoint.load(run / "last.pt")["epoch"] == 3 and resuming.completed(run)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("errno_name, fail_from, where, saved", [
    ("ENOSPC", 1, "config.yaml: No space left on device (ENOSPC)", None),  # the first write of the run
    ("EACCES", 3, "last.pt: Permission denied (EACCES)", None),  # the first checkpoint (after resume.yaml)
    ("ENOSPC", 4, "best.pt: No space left on device (ENOSPC)", 1),  # between last.pt and best.pt of epoch 1
    ("EROFS", 5, "last.pt: Read-only file system (EROFS)", 1),  # mid-run: epoch 2's checkpoint
], ids=["full_at_first_write", "denied_at_first_checkpoint", "full_between_last_and_best", "read_only_mid_run"])
def test_a_failing_write_is_one_line_and_keeps_the_last_epoch(tmp_path, errno_name, fail_from, where, saved) -> None:
    env = {"DLTRAIN_TEST_FAIL_FROM": str(fail_from), "DLTRAIN_TEST_ERRNO": errno_name}
    line = one_error_line(with_fault("failing_writes_cli", [*RUN, "hydra.run.dir=run"], tmp_path, env))
    run = tmp_path / "run"
    assert line.startswith(f"dltrain: error: {run / where}; "), line
    if saved is None:
        assert line.endswith(f"no complete epoch is saved in {run}"), line
        return
    assert f"epoch {saved}/3 is saved whole in {run}" in line and line.endswith(f"trainer.resume={run}"), line
    assert checkpoint.load(run / "last.pt")["epoch"] == saved
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    resumes_to_the_end(tmp_path, run, line)


def test_a_sweep_on_a_read_only_disk_reports_every_job_and_exits_1(tmp_path) -> None:
    env = {"DLTRAIN_TEST_FAIL_FROM": "1", "DLTRAIN_TEST_ERRNO": "EROFS"}
    result = with_fault("failing_writes_cli", ["-m", *RUN, "optim=sgd,adam", "hydra.sweep.dir=sweep"], tmp_path, env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    for job in ("optim=sgd", "optim=adam"):
        assert f"error: {tmp_path / 'sweep' / job / 'config.yaml'}: Read-only file system (EROFS)" in result.stdout
    assert "2 job(s) failed" in result.stderr


def test_a_run_folder_deleted_mid_run_is_one_line(tmp_path) -> None:
    line = one_error_line(with_fault("run_dir_deleted_cli", [*RUN, "hydra.run.dir=run"], tmp_path))
    assert line.endswith(f"the run folder {tmp_path / 'run'} was deleted while the run wrote to it"), line


def test_a_failing_clean_up_does_not_hide_the_write_error(tmp_path, monkeypatch) -> None:
    def full_disk(handle) -> None:
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    def denied(self, missing_ok=False) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", denied)
    with pytest.raises(OSError) as err:
        write_atomic(tmp_path / "last.pt", full_disk)
    assert err.value.errno == 28 and err.value.filename == str(tmp_path / "last.pt")


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `path` (root only: skipped where mounting is not allowed)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_really_full_disk_mid_run_keeps_epoch_1_and_resumes_after_more_room(tmp_path) -> None:
    # checkpoints of model.hidden=[1024] are ~316 kB: epoch 1's last.pt and best.pt fit in 800 kB, epoch 2's does not
    big = [*RUN, "model.hidden=[1024]"]
    with small_disk(tmp_path / "disk", "800k") as disk:
        result = cli([*big, f"hydra.run.dir={disk / 'run'}"], cwd=tmp_path)
        line = one_error_line(result)
        assert ": No space left on device (ENOSPC); epoch 1/3 is saved whole in" in line, line
        assert checkpoint.load(disk / "run" / "last.pt")["epoch"] == 1
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        again = cli([*big, f"trainer.resume={disk / 'run'}"], cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert checkpoint.load(disk / "run" / "last.pt")["epoch"] == 3 and resuming.completed(disk / "run")


def test_an_immutable_run_folder_refuses_the_resume_and_keeps_its_files(tmp_path) -> None:
    run = tmp_path / "run"
    train([*RUN, "trainer.max_epochs=1"], run)  # the run to resume: made in this process (the resume is the test)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    if subprocess.run(["chattr", "+i", str(run)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system that supports it")
    try:
        line = one_error_line(cli([*RUN, f"trainer.resume={run}"], cwd=tmp_path))
    finally:
        subprocess.run(["chattr", "-i", str(run)], check=True)
    assert line.startswith(f"dltrain: error: {run / 'config.yaml'}: Operation not permitted (EPERM); "
                           f"epoch 1/3 is saved whole in {run}"), line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert checkpoint.load(run / "last.pt")["epoch"] == 1


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch) -> None:
    """A power cut after write_atomic returns keeps the new file: its data is fsynced before the rename and the
    folder's entry after it."""
    import stat

    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(
        "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("rename"), real_replace(a, b))[1])
    write_atomic(tmp_path / "metrics.json", lambda handle: handle.write(b"{}"))
    assert calls == ["file", "rename", "folder"]
    assert (tmp_path / "metrics.json").read_bytes() == b"{}"


def test_run_files_are_as_readable_as_the_umask_allows(tmp_path) -> None:
    """Atomic writes go through a temp file (0600 by mkstemp); the files a teammate's TensorBoard or `dltrain runs`
    reads get the mode an ordinary new file gets."""
    result = subprocess.run(["sh", "-c", f"umask 022 && exec {Path(sys.executable).parent / 'dltrain'} \"$@\"", "sh",
                             *RUN[:-1], "trainer.max_epochs=1", "hydra.run.dir=run"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert {modes[name] for name in checkpoint.RUN_FILES} == {"0o644"}, modes
