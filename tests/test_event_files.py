"""After a kill and a resume, the run's TensorBoard history has one value per (tag, step) and steps only grow."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, load_scalars, run

RUN = ["model.hidden=[16]", "trainer.log_every_n_steps=5", "early_stopping.patience=100"]
# The child dies inside the checkpoint write of epoch 3: TensorBoard already holds epoch 3, last.pt epoch 2.
KILL_AT_EPOCH_3 = """
import os, sys
import dltrain.core.checkpoint as ckpt
save = ckpt.save_atomic
def dying_save(obj, path):
    if obj["epoch"] == 3:
        os._exit(9)
    save(obj, path)
ckpt.save_atomic = dying_save
from dltrain.cli.main import main
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
    resumed = run([*RUN, "trainer.max_epochs=5", f"trainer.resume={tmp_path / 'run'}"], tmp_path / "run")  # here
    assert resumed["status"] == "completed", resumed
    after = load_scalars(tmp_path / "run")
    for tag, points in after.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), (tag, steps)  # unique and increasing
    assert [s for s, _ in after["val/loss"]] == [1, 2, 3, 4, 5]
    step_values = [s for s, _ in after["z_more/train/loss_step"]]
    assert step_values == list(range(5, 5 * len(step_values) + 1, 5))


def test_a_resume_trims_the_step_loss_of_a_run_from_an_earlier_release(tmp_path) -> None:
    """Runs of earlier releases logged the per-step loss as `train/loss_step`: still x = optimizer steps."""
    from torch.utils.tensorboard import SummaryWriter

    from dltrain.core.event_files import keep_until
    from dltrain.core.tags import OLD_STEP_LOSS

    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        for epoch in (1, 2, 3):
            writer.add_scalar("val/loss", 1.0 / epoch, epoch)
            for step in range(10 * epoch - 5, 10 * epoch + 1, 5):  # 2 logged steps per epoch of 10
                writer.add_scalar(OLD_STEP_LOSS, 0.5, step)
    assert keep_until(tmp_path, epoch=2, step=20) == 3  # epoch 3, steps 25 and 30
    kept = load_scalars(tmp_path)
    assert [s for s, _ in kept[OLD_STEP_LOSS]] == [5, 10, 15, 20] and [s for s, _ in kept["val/loss"]] == [1, 2]
