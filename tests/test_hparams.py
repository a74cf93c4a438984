"""The HParams experiment's plan (dltrain/sweep/hparams.py): a re-run of a sweep merges with what its first run wrote."""
from __future__ import annotations

from dltrain.sweep.hparams import merge


def test_a_rerun_widens_domains_and_a_renamed_column_keeps_its_place() -> None:
    """A sweep begun before the test columns moved under z_more/ (its sweep.json lists `test/acc` as the tag):
    re-run, the column takes today's tag where it stood, among the first five shown, not twice."""
    previous = {"hparams": {"optim.name": {"values": ["sgd"], "differs": True}, "optim.lr": {"values": [0.1]}},
                "metrics": [["val/loss_best", "best/val/loss"], ["test/acc", "test/acc"], ["val/loss", "final/val/loss"]]}
    today = {"optim.name": {"values": ["sgd", "adam"], "differs": True},
             "optim.lr": {"values": [0.1, 0.001], "differs": False}}
    columns = [["val/loss_best", "best/val/loss"], ["z_more/test/acc", "test/acc"], ["val/loss", "final/val/loss"],
               ["train/loss", "final/train/loss"]]
    hparams, metrics = merge(previous, today, columns)
    assert hparams["optim.name"] == {"values": ["sgd", "adam"], "differs": True}
    assert hparams["optim.lr"] == {"values": [0.1, 0.001], "differs": False}
    assert metrics == [["val/loss_best", "best/val/loss"], ["z_more/test/acc", "test/acc"],
                       ["val/loss", "final/val/loss"], ["train/loss", "final/train/loss"]]
