"""A character-level corpus from a UTF-8 text file, for next-character language modelling."""
from __future__ import annotations

from pathlib import Path

import torch

from dltrain.data import DATASETS, DataBundle, Split, check_fractions
from dltrain.registry import ConfigError, check, first_line


def windows(ids: torch.Tensor, seq_len: int) -> Split:
    """Non-overlapping windows: x = ids[i:i+L], y = ids[i+1:i+L+1]."""
    count = (len(ids) - 1) // seq_len
    x = ids[: count * seq_len].reshape(count, seq_len)
    y = ids[1: count * seq_len + 1].reshape(count, seq_len)
    return Split(x, y)


@DATASETS.register("text")
def build_text(*, seed: int, path: str, seq_len: int = 64, fractions: list[float] = (0.8, 0.1, 0.1)) -> DataBundle:
    """The corpus is split contiguously (train, then val, then test) so no window leaks across splits."""
    file = Path(path).expanduser()
    check(file.is_file(), f"data.path={path} is not a file; give a UTF-8 text file (data.path=/path/to/corpus.txt)")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"data.path={path} is not readable UTF-8 text ({first_line(err)})") from None
    check(seq_len >= 1, f"data.seq_len={seq_len} must be >= 1 (characters)")
    check(len(text) > seq_len, f"data.path={path} has {len(text)} characters: too short for seq_len={seq_len}")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text])  # once, at load time
    f = check_fractions(list(fractions))
    ends = [int(len(ids) * f[0]), int(len(ids) * (f[0] + f[1])), int(len(ids) * sum(f))]
    splits = [windows(ids[a:b], seq_len) for a, b in zip([0, *ends[:2]], ends)]
    check(len(splits[0]) > 0, f"data.path={path} has {len(text)} characters: too short for seq_len={seq_len}")
    return DataBundle(*splits, task="language_model", num_outputs=len(vocab), vocab=vocab, per_step_targets=True)

