"""A run's TensorBoard history stays a function of the step after any interruption: before a (resumed) run
writes again, its event files lose every value past the point the checkpoint holds, so each (tag, step) has one
value and steps only grow. TensorBoard's own `purge_step` cannot do this here: it takes one step for all tags,
and the per-step loss (`z_more/train/loss_step`) counts optimizer steps while the other curves count epochs.
`write_events` writes a whole event file atomically: the rewritten ones, and the HParams experiment (hparams.py).
`open_after_existing` keeps a resumed run's new file last in the folder's name order, which TensorBoard reads by."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from dltrain.core.files import write_atomic
from dltrain.core.tags import OLD_STEP_LOSS, STEP_LOSS, board_tag

PATTERN = "events.out.tfevents.*"  # then the second the writer opened (10 digits), the host, the pid, a counter
LONGEST_WAIT = 2.0  # s: a clock behind the newest file by more than this is reported, not waited out
STEP_TAGS = (STEP_LOSS, OLD_STEP_LOSS)  # x = optimizer steps; every other tag's x is epochs done
# Logged once, at the run's end (x = its last epoch): a resume logs them again when it ends. Both names: this
# release's (z_more/test/...) and an earlier release's (test/...).
END_PREFIXES = (board_tag("test/"), "test/")


def keep_until(run_dir: Path, epoch: int, step: int) -> int:
    """Drop values logged after `epoch` (epoch tags) or `step` (step tags), and the end-of-run test values logged at
    `epoch` or after (a resume that only finishes the run logs them again), from the run's own event files;
    returns how many values were dropped. Each file is rewritten atomically."""
    dropped = 0
    for path in sorted(run_dir.glob(PATTERN)):
        dropped += rewrite(path, epoch, step)
    return dropped


def open_after_existing(run_dir: Path) -> float:
    """Wait, if needed, until the clock's second is past the second in every event file name in `run_dir`; returns
    the seconds waited. Why: TensorBoard reads a folder's files in name order and a name starts with the second its
    writer opened (then host and pid), so a writer opened in the same second as the last one (a run killed in its
    first second and resumed at once, or resumed on another host) could sort first, and TensorBoard would show them
    out of order (the resumed steps first) or as orphaned."""
    seconds = [path.name.split(".")[3] for path in run_dir.glob(PATTERN)]
    newest = max((int(second) for second in seconds if second.isdigit()), default=None)
    if newest is None:
        return 0.0
    wait = newest + 1 - time.time()
    if wait <= 0:
        return 0.0
    if wait > LONGEST_WAIT:
        print(f"note: this machine's clock is {wait:.0f} s behind the newest TensorBoard file in {run_dir}; "
              "TensorBoard may show the resumed values before the earlier ones (set the clock right)", file=sys.stderr)
        return 0.0
    time.sleep(wait)
    return wait


def rewrite(path: Path, epoch: int, step: int) -> int:
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    kept, dropped = [], 0
    for record in RawEventFileLoader(str(path)).Load():
        event = Event.FromString(record)
        if event.HasField("summary") and event.summary.value:
            values = [v for v in event.summary.value if stays(v, event.step, epoch, step)]
            dropped += len(event.summary.value) - len(values)
            if not values:
                continue
            del event.summary.value[:]
            event.summary.value.extend(values)
        kept.append(event.SerializeToString())
    if dropped:
        write_events(path, kept)
    return dropped


def write_events(path: Path, records: list[bytes]) -> None:
    """Serialized `Event`s as the event file `path` (TensorBoard's own record format), replaced atomically."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    def write(handle: Any) -> None:
        writer = RecordWriter(handle)
        for record in records:
            writer.write(record)

    write_atomic(path, write)


def stays(value: Any, at: int, epoch: int, step: int) -> bool:
    """Whether a summary value logged at x=`at` stays when the run goes on from (`epoch`, `step`)."""
    if value.metadata.plugin_data.plugin_name == "hparams":
        return True
    if value.tag.startswith(END_PREFIXES):
        return at < epoch
    return at <= (step if value.tag in STEP_TAGS else epoch)


def epoch_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar a run logged per epoch, {tag: {epoch: value}}, read from its own event files as stored: each
    value is the float32 the file holds (widened to a Python float exactly, so two compare bitwise as float32s).
    Step tags, the end-of-run test values and HParams records are left out. A later file's value replaces an
    earlier one's at the same (tag, epoch), as TensorBoard shows it; `keep_until` leaves none such anyway."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    history: dict[str, dict[int, float]] = {}
    for path in sorted(run_dir.glob(PATTERN)):
        for record in RawEventFileLoader(str(path)).Load():
            event = Event.FromString(record)
            for value in event.summary.value if event.HasField("summary") else ():
                if (value.WhichOneof("value") == "simple_value" and value.tag not in STEP_TAGS
                        and not value.tag.startswith(END_PREFIXES)):
                    history.setdefault(value.tag, {})[event.step] = value.simple_value
    return history
