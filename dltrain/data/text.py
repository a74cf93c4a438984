"""A character-level corpus from a UTF-8 text file, for next-character language modelling."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch

from dltrain.core.registry import ConfigError, check, first_line
from dltrain.core.rules import Positive
from dltrain.data import DATASETS, DataBundle, Fractions, Split, check_files, check_fractions


def windows(ids: torch.Tensor, seq_len: int) -> Split:
    """Non-overlapping windows: x = ids[i:i+L], y = ids[i+1:i+L+1]."""
    count = (len(ids) - 1) // seq_len
    x = ids[: count * seq_len].reshape(count, seq_len)
    y = ids[1: count * seq_len + 1].reshape(count, seq_len)
    return Split(x, y)


def corpus_exists(**options: Any) -> None:
    check_files("a UTF-8 text file (data.path=/path/to/corpus.txt)", path=options["path"])


@DATASETS.register("text", inputs=corpus_exists, task="language_model")
def build_text(*, seed: int, path: str, seq_len: Annotated[int, Positive] = 64,
               fractions: Fractions = (0.8, 0.1, 0.1)) -> DataBundle:
    """The corpus is split contiguously (train, then val, then test) so no window leaks across splits; `seq_len`
    characters per sample."""
    file = Path(path).expanduser()
    corpus_exists(path=path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"data.path={path} is not readable UTF-8 text ({first_line(err)})") from None
    check(len(text) > seq_len, f"data.path={path} has {len(text)} characters: too short for seq_len={seq_len}")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text])  # once, at load time
    f = check_fractions(list(fractions))
    ends = [int(len(ids) * f[0]), int(len(ids) * (f[0] + f[1])), int(len(ids) * sum(f))]
    splits = [windows(ids[a:b], seq_len) for a, b in zip([0, *ends[:2]], ends)]
    check(len(splits[0]) > 0, f"data.path={path} has {len(text)} characters: too short for seq_len={seq_len}")
    return DataBundle(*splits, task="language_model", num_outputs=len(vocab), vocab=vocab, per_step_targets=True)

