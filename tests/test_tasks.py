"""Tasks: each loss fits its task (or is a one-line error), metrics are exact, language models generate."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dltrain.core.registry import ConfigError
from dltrain.core.tasks import build_task
from tests.conftest import cli, run


class Fixed(torch.nn.Module):
    """Returns preset outputs, to check a task's arithmetic."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out


@pytest.mark.parametrize("loss, fn", [("mse", F.mse_loss), ("l1", F.l1_loss), ("smooth_l1", F.smooth_l1_loss),
                                      ("huber", F.huber_loss)])
def test_regression_losses_and_metrics(loss: str, fn) -> None:
    out, y = torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.5, 2.0], [2.0, -1.0]])
    task = build_task("regression", loss=loss)
    loss_sum, sums = task.step(Fixed(out), out, y)
    assert loss_sum.item() == pytest.approx(fn(out, y).item() * 2)  # mean over 4 values -> sum over 2 samples
    assert task.metric_names == ("mse", "mae")  # the sums vector: loss, then metric_names in order
    assert sums[0].item() == pytest.approx(loss_sum.item())
    assert sums[1].item() / 2 == pytest.approx(F.mse_loss(out, y).item())
    assert sums[2].item() / 2 == pytest.approx(F.l1_loss(out, y).item())


def test_classification_bce_and_label_smoothing() -> None:
    logits, y = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 1, 0])
    loss_sum, sums = build_task("classification", loss="bce").step(Fixed(logits), logits, y)
    assert loss_sum.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits[:, 0], y.float(),
                                                                               reduction="sum").item())
    assert sums[1].item() == 1  # accuracy sum: one of three right
    logits3 = torch.randn(4, 3)
    smoothed, _ = build_task("classification", label_smoothing=0.1).step(Fixed(logits3), logits3, torch.tensor([0, 1, 2, 0]))
    expected = F.cross_entropy(logits3, torch.tensor([0, 1, 2, 0]), label_smoothing=0.1, reduction="sum")
    assert smoothed.item() == pytest.approx(expected.item())


@pytest.mark.parametrize("task, loss, valid", [
    ("classification", "mse", "cross_entropy, bce"), ("regression", "cross_entropy", "mse, l1, smooth_l1, huber"),
    ("reconstruction", "huber", "mse, bce"), ("language_model", "mse", "cross_entropy"),
    ("adversarial", "mse", "bce"),
])
def test_a_loss_that_does_not_fit_the_task_is_an_error(task: str, loss: str, valid: str) -> None:
    with pytest.raises(ConfigError, match=f"loss={loss} does not fit task={task}; valid: {valid}"):
        build_task(task, loss=loss)


def test_wrong_loss_from_the_cli(tmp_path) -> None:
    result = cli(["data=diabetes", "loss=cross_entropy"], cwd=tmp_path)
    assert result.returncode == 2 and "does not fit task=regression" in result.stderr


def test_denoising_corrupts_training_inputs_only() -> None:
    task = build_task("reconstruction", loss="mse", denoise=0.5)
    model = torch.nn.Identity()
    x = torch.randn(8, 4)
    model.train()
    noisy_loss, _ = task.step(model, x, x)
    model.eval()
    clean_loss, _ = task.step(model, x, x)
    assert noisy_loss.item() > 0.1 and clean_loss.item() == 0.0


def test_language_model_perplexity_is_exp_loss_and_generate_samples(tmp_path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    report = run(["data=text", f"data.path={corpus}", "data.seq_len=16", "model=lstm", "model.hidden_size=64",
                  "optim=adam", "optim.lr=0.01", "trainer.max_epochs=8", "trainer.log_every_n_steps=0"],
                 tmp_path / "run")
    final = report["final"]
    assert final["val/ppl"] == pytest.approx(math.exp(final["val/loss"]))
    assert final["val/ppl"] < 4.0  # a 28-character vocabulary: the model learned the repeated sentence
    result = cli(["generate", str(tmp_path / "run"), "--prompt", "the quick", "--length", "30",
                  "--temperature", "0.5"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout.strip()
    assert text.startswith("the quick") and len(text) == 39 and set(text) <= set(corpus.read_text())
    bad = cli(["generate", str(tmp_path / "run"), "--prompt", "XYZ"], cwd=tmp_path)
    assert bad.returncode == 2 and "never saw" in bad.stderr


def test_gan_run_logs_both_losses_and_a_sample_grid(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = run(["model=gan", "task=adversarial", "optim=adam", "optim.lr=0.0005", "early_stopping=none",
                  "trainer.max_epochs=2", "trainer.log_every_n_steps=0"], tmp_path)
    assert {"val/d_loss", "val/g_loss"} <= set(report["final"])
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert "samples" in acc.Tags()["images"] and "train/g_loss" in acc.Tags()["scalars"]
