"""The IMDB movie-review sentiment set (`data=imdb`) in its standard layout, `aclImdb/{train,test}/{pos,neg}/*.txt`
(Maas et al. 2011; `unsup/` and the `.feat`/`.vocab` files are ignored), for sequence classification with
model=rnn/lstm/gru: embedding -> recurrent layers -> a classifier on the last step.

`root` is the `aclImdb` folder (or a folder holding it). Each review is lowercased, its `<br />` tags become
spaces, and its words (letters, digits and inner apostrophes) are looked up in a vocabulary built from the
train split only: the `vocab_size` - 2 most frequent words seen at least `min_count` times (ties by word),
after index 0 = padding and 1 = unknown. A review keeps its last `seq_len` words and is padded at the front,
so the classifier's last step is always the review's last word (Keras' `pad_sequences` defaults).
Labels: neg = 0, pos = 1. With `use_official_test` the official test reviews are the test split and the train
reviews are shared by train/val in the ratio of `fractions`; otherwise everything is pooled and split by it.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Annotated

import torch

from dltrain.core.files import looked_in
from dltrain.core.registry import ConfigError, check, first_line
from dltrain.core.rules import Positive, Range
from dltrain.data import DATASETS, DataBundle, Fractions, Split, check_fractions, split_indices

CLASSES = ("neg", "pos")  # label = index
SPECIALS = ("<pad>", "<unk>")  # ids 0 and 1
WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
TOKENIZER_RULE = (f"lowercase; {BREAK.pattern} (any case) -> space; words: {WORD.pattern}; the last seq_len words, "
                  "padded with id 0 at the front; a word not in vocab -> id 1")  # for users of an exported model


def tokenize(text: str) -> list[str]:
    return WORD.findall(BREAK.sub(" ", text).lower())


def find_root(root: Path) -> Path:
    for candidate in (root, root / "aclImdb"):
        if (candidate / "train").is_dir() or (candidate / "test").is_dir():
            return candidate
    raise ConfigError(f"data=imdb: {root}{looked_in(root)} holds no aclImdb layout; expected {root}/train/pos/*.txt, "
                      f"train/neg, test/pos, test/neg (or {root}/aclImdb/...): unpack aclImdb_v1.tar.gz there")


def read_part(folder: Path) -> tuple[list[list[str]], list[int]]:
    """Tokenized reviews and labels of train/ or test/; both class folders must be there."""
    reviews: list[list[str]] = []
    labels: list[int] = []
    for label, name in enumerate(CLASSES):
        sub = folder / name
        check(sub.is_dir(), f"data=imdb: {sub} is missing; {folder} needs both pos/ and neg/ review folders")
        files = sorted(sub.glob("*.txt"))
        check(bool(files), f"data=imdb: {sub} has no .txt reviews")
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise ConfigError(f"{path} is not UTF-8 text ({first_line(err)}); replace it with the original "
                                  "review file") from None
            except OSError as err:
                raise ConfigError(f"{path} is not readable ({err.strerror or first_line(err)})") from None
            reviews.append(tokenize(text))
            labels.append(label)
    return reviews, labels


def build_vocab(reviews: list[list[str]], vocab_size: int, min_count: int) -> list[str]:
    counts = Counter(word for review in reviews for word in review)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [*SPECIALS, *kept[:vocab_size - len(SPECIALS)]]


def encode(reviews: list[list[str]], index: dict[str, int], seq_len: int) -> torch.Tensor:
    """(N, seq_len) token ids: the last seq_len words of each review, padded with 0 at the front."""
    ids = torch.zeros(len(reviews), seq_len, dtype=torch.long)
    for i, review in enumerate(reviews):
        tail = [index.get(word, 1) for word in review[-seq_len:]]
        if tail:
            ids[i, seq_len - len(tail):] = torch.tensor(tail)
    return ids


@DATASETS.register("imdb", task="classification")
def build_imdb(*, seed: int, root: str = "~/.cache/dltrain/aclImdb", seq_len: Annotated[int, Positive] = 200,
               vocab_size: Annotated[int, Range(gt=len(SPECIALS))] = 20000, min_count: Annotated[int, Positive] = 2,
               use_official_test: bool = True, fractions: Fractions = (0.8, 0.1, 0.1),
               stratify: bool = False) -> DataBundle:
    """Token ids (N, seq_len) and labels (N,); the vocabulary (index -> word, padding and unknown included) goes to
    the model as vocab_size; `min_count` is a word's occurrences in the train split to be in it."""
    f = check_fractions(list(fractions))
    folder = find_root(Path(root).expanduser())
    parts = {p: read_part(folder / p) for p in ("train", "test") if (folder / p).is_dir()}
    check(not use_official_test or "test" in parts, f"data.use_official_test=true needs {folder}/test/{{pos,neg}}; "
          "only train/ is there (set data.use_official_test=false to split it by data.fractions)")
    if use_official_test:
        check(f[0] + f[1] > 0, "data.fractions: train + val shares must be > 0")
        reviews, labels = parts["train"]
        train_idx, val_idx, _ = split_indices(len(reviews), (f[0] / (f[0] + f[1]), f[1] / (f[0] + f[1]), 0.0), seed,
                                             torch.tensor(labels) if stratify else None)
        test_reviews, test_labels = parts["test"]
    else:
        reviews = [r for p in parts.values() for r in p[0]]
        labels = [label for p in parts.values() for label in p[1]]
        train_idx, val_idx, test_idx = split_indices(len(reviews), f, seed, torch.tensor(labels) if stratify else None)
        test_reviews = [reviews[i] for i in test_idx.tolist()]
        test_labels = [labels[i] for i in test_idx.tolist()]
    train_reviews = [reviews[i] for i in train_idx.tolist()]
    vocab = build_vocab(train_reviews, vocab_size, min_count)  # the train split only: no val/test word leaks in
    index = {word: i for i, word in enumerate(vocab)}
    y = torch.tensor(labels, dtype=torch.long)
    splits = [Split(encode(train_reviews, index, seq_len), y[train_idx]),
              Split(encode([reviews[i] for i in val_idx.tolist()], index, seq_len), y[val_idx]),
              Split(encode(test_reviews, index, seq_len), torch.tensor(test_labels, dtype=torch.long))]
    prep = {"data": "imdb", "input": "tokens", "text": {"tokenizer": "imdb", "rule": TOKENIZER_RULE, "seq_len": seq_len,
                                                        "vocab": vocab, "padding": 0, "unknown": 1, "pad": "front"}}
    return DataBundle(*splits, task="classification", num_outputs=len(CLASSES), vocab=vocab, per_step_targets=False,
                      class_names=list(CLASSES), preprocessing=prep)
