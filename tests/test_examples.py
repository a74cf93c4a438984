"""The README's learning examples show what they promise, run with the README's own command lines: the GAN draws
digits a classifier recognizes, a character LSTM writes words of its corpus, an LSTM solves the adding problem."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, cli

# One torch thread per run: two threads on two cores that other processes share slow an epoch down many times
# (measured: 3 s alone, up to 200 s beside another two-thread run). The results do not depend on it.
ONE_THREAD = ["trainer.threads=1"]
WORDS = ("the cat sat on a mat and dog ran to red big old man saw her fox jumps over lazy brown quick green tree "
         "under small house little bird sings song every morning").split()


@pytest.mark.slow
def test_gan_digits_draws_recognizable_digits_of_many_classes(tmp_path) -> None:
    """bench/gan_digits.py trains `dltrain experiment=gan_digits` (seed 0, its 100 epochs) and scores 100 samples
    with a LogisticRegression trained on the real digits (test accuracy about 0.96). Thresholds: the classifier is
    sure (top probability >= 0.5) of at least half the samples, and those cover >= 8 of the 10 classes. Measured:
    0.78 and 10 classes; the untrained generator's grey blobs score 0.11 and 1 class, real test digits 0.96."""
    out = tmp_path / "gan.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gan_digits.py"), "--json", str(out), *ONE_THREAD],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    generated, untrained = result["generated"], result["untrained"]
    assert generated["confident_share"] >= 0.5 and generated["classes_covered"] >= 8, proc.stdout
    assert untrained["confident_share"] < 0.3 and untrained["classes_covered"] < 8, proc.stdout  # the score is no
    # rubber stamp: grey noise fails it
    assert result["real_test"]["accuracy"] > 0.9


def word_corpus(sentences: int, seed: int = 0) -> str:
    """Sentences of 4..8 words from WORDS, capitalized, each ending with '. ' (about 35 characters each)."""
    rng = random.Random(seed)
    parts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 8))).capitalize() + "." for _ in range(sentences)]
    return " ".join(parts) + "\n"


@pytest.mark.slow
def test_character_lstm_writes_words_of_its_corpus(tmp_path) -> None:
    """The README's two text commands, as typed: train, then `generate --prompt "The " --length 200`. At least
    60% of the generated words (punctuation stripped, the last one possibly cut off dropped) are corpus words."""
    (tmp_path / "corpus.txt").write_text(word_corpus(600))  # about 22 KB
    trained = cli(["data=text", "data.path=corpus.txt", "model=lstm", *ONE_THREAD], cwd=tmp_path, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    run_dir = re.search(r"run dir (\S+)", trained.stdout).group(1)
    generated = cli(["generate", run_dir, "--prompt", "The ", "--length", "200"], cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    words = [w.strip(".,").lower() for w in generated.stdout.split()[:-1]]
    known = sum(w in WORDS for w in words)
    assert len(words) >= 20 and known >= 0.6 * len(words), (known, len(words), generated.stdout)


@pytest.mark.slow
def test_lstm_learns_the_adding_problem_with_its_defaults(tmp_path) -> None:
    """`dltrain data=adding model=lstm` as the README gives it (the data's defaults pick Adam): test MSE far below
    chance (1/6). Limited to 6 epochs here (it leaves the plateau in epoch 4); the full run only goes lower."""
    trained = cli(["data=adding", "model=lstm", "trainer.max_epochs=6", *ONE_THREAD], cwd=tmp_path, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    run_dir = re.search(r"run dir (\S+)", trained.stdout).group(1)
    metrics = json.loads((tmp_path / run_dir / "metrics.json").read_text())
    assert metrics["test"]["test/mse"] < 0.05, metrics
