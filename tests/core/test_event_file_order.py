"""A resumed run's new event file sorts after the files already in its folder (TensorBoard reads them in name order)."""
from __future__ import annotations

import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from dltrain.core.event_files import open_after_existing
from tests.conftest import load_scalars


def earlier_file(run_dir: Path, second: int) -> Path:
    """An event file as an earlier writer on another host leaves it (at the same second it sorts after this one's)."""
    path = run_dir / f"events.out.tfevents.{second:010d}.zz-node.1.0"
    with SummaryWriter(log_dir=str(run_dir), filename_suffix=".tmp") as writer:
        writer.add_scalar("val/loss", 3.0, 3)
        written = Path(writer.file_writer.get_logdir()).glob("*.tmp")
    next(written).rename(path)
    return path


def test_a_writer_opened_in_the_same_second_waits_for_the_next_one(tmp_path) -> None:
    second = int(time.time())
    earlier_file(tmp_path, second)
    waited = open_after_existing(tmp_path)
    assert 0 < waited <= 1 and int(time.time()) > second
    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        writer.add_scalar("val/loss", 2.0, 4)
    assert [step for step, _ in load_scalars(tmp_path)["val/loss"]] == [3, 4]  # read in order: nothing discarded


def test_no_wait_after_files_of_an_earlier_second(tmp_path) -> None:
    earlier_file(tmp_path, int(time.time()) - 60)
    started = time.monotonic()
    assert open_after_existing(tmp_path) == 0.0 and time.monotonic() - started < 0.5
    assert open_after_existing(tmp_path / "empty") == 0.0  # no folder yet: nothing to sort after


def test_a_clock_far_behind_is_reported_not_waited_out(tmp_path, capsys) -> None:
    earlier_file(tmp_path, int(time.time()) + 100)
    assert open_after_existing(tmp_path) == 0.0
    assert "clock is 10" in capsys.readouterr().err
