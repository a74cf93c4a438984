"""After a kill and a resume, the run's TensorBoard history has one value per (tag, step) and steps only grow."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, cli, load_scalars

RUN = ["model.hidden=[16]", "trainer.log_every_n_steps=5", "early_stopping.patience=100"]
# The child dies inside the checkpoint write of epoch 3: TensorBoard already holds epoch 3, last.pt epoch 2.
KILL_AT_EPOCH_3 = """
import os, sys
import dltrain.checkpoint as ckpt
save = ckpt.save_atomic
def dying_save(obj, path):
    if obj["epoch"] == 3:
        os._exit(9)
    save(obj, path)
ckpt.save_atomic = dying_save
from dltrain.cli import main
sys.argv = ["dltrain", *sys.argv[1:]]
main()
"""


def test_a_resumed_run_has_one_value_per_step(tmp_path) -> None:
    killed = subprocess.run([sys.executable, "-c", KILL_AT_EPOCH_3, *RUN, "trainer.max_epochs=5", "hydra.run.dir=run"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert killed.returncode == 9, killed.stderr
    before = load_scalars(tmp_path / "run")
    assert [s for s, _ in before["val/loss"]] == [1, 2, 3]  # epoch 3 was logged, its checkpoint was not
    resumed = cli([*RUN, "trainer.max_epochs=5", "trainer.resume=run"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    after = load_scalars(tmp_path / "run")
    for tag, points in after.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), (tag, steps)  # unique and increasing
    assert [s for s, _ in after["val/loss"]] == [1, 2, 3, 4, 5]
    step_values = [s for s, _ in after["train/loss_step"]]
    assert step_values == list(range(5, 5 * len(step_values) + 1, 5))
