"""TensorBoard tag names, chosen for the screen TensorBoard opens on.

TensorBoard groups a tag by its first path component (`val` for `val/loss`) and opens only the first two groups
in its natural order (digits and '/' first, then by character code): Time Series expands `groups[:2]` when it
first loads a logdir's tags, Scalars opens categories 0-2 of which 0 is its tag-search pane. (Read in
tensorboard 2.21's webfiles.zip: the metrics reducer that fills `tagGroupExpanded`, and tf-scalar-dashboard's
`_shouldOpen(index) { return index <= 2 }`.) So the epoch curves a sweep is compared by are `train/<metric>`
and `val/<metric>`: those two groups open, each run one line in every card. Everything else sits under `z_more/`,
which sorts after them and starts collapsed: the learning rate, the per-step training loss (x = optimizer steps),
epoch seconds, throughput, and the test metrics (one point at the last epoch; the HParams columns read them).
metrics.json, the console and the `runs` table keep the plain names (`lr`, `test/acc`).
"""
from __future__ import annotations

MORE = "z_more"  # sorts after `train` and `val` ('z' > 'v'); torch's add_scalar allows only [-/\w.] in a tag
CURVES = ("train/", "val/")  # the two groups TensorBoard opens
STEP_LOSS = f"{MORE}/train/loss_step"  # the running training loss per logged optimizer step
OLD_STEP_LOSS = "train/loss_step"  # its name in runs of earlier releases, which a resume still trims


def board_tag(name: str) -> str:
    """The TensorBoard tag of a value named `name` in metrics.json: `train/acc` stays, `lr` -> `z_more/lr`,
    `test/acc` -> `z_more/test/acc`."""
    return name if name.startswith(CURVES) else f"{MORE}/{name}"


def best_tag(monitor: str) -> str:
    """The scalar tag of the monitored metric's running best: a curve beside the monitor's own (val/loss_best
    sorts right after val/loss), whose last value is the run's best and the HParams column best/<monitor>."""
    return board_tag(f"{monitor}_best")
