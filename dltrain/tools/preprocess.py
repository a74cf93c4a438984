"""Raw inputs to model inputs from a run's saved preprocessing description, never from its training data.

A data builder records what it learned from the train split as `DataBundle.preprocessing` (plain JSON-able
values); `DataBundle.description()` adds the sample shape, dtype, task, classes and the model's data arguments,
and every checkpoint keeps that under "preprocessing". Its keys:

- `input`: how a raw sample looks: `table` (CSV rows), `image` (image files), `tokens` (text files) or `array`
  (.npy/.npz numbers); `data`: the data choice it came from; `shape`, `dtype`: one model input sample.
- `mean`, `std` (optional): the model sees (raw / divide_by - mean[c]) / std[c], one value per channel (axis 1 of
  the batch; per position for a table); `divide_by` (optional): 255 for pixels given as 0..255.
- `target` (optional, regression): {mean, std}: the model's outputs are in (y - mean) / std units.
- `columns` (table): per feature, {name, kind: numeric, fill} or {name, kind: categorical, categories}; the
  numeric columns come first in x, then one one-hot block per categorical column (a category not in
  `categories`: refused, or all zeros with a warning under `predict --unseen-category zeros`); plus `target_column`,
  `delimiter`, `na_values` and `missing` (error | drop | mean: whether a missing cell may take `fill` / zeros).
- `image`: {size: [H, W], channels: 1 | 3}: Pillow converts to L or RGB and resizes (bilinear) as training did.
- `text` (tokens): {tokenizer, rule, seq_len, vocab, padding, unknown, pad}.

`read_inputs` turns files into (names, raw batch) with no scaling; `Deployed` wraps a model with the scaling, so
`dltrain predict` and the exported TorchScript/ONNX model compute the same function of the same raw values.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dltrain.core.registry import ConfigError, check, first_line
from dltrain.data import image_folder, imdb, limits
from dltrain.data.arrays import read_array
from dltrain.data.limits import FLOAT32_MAX
from dltrain.data.tabular import read_csv

INPUTS = {"table": ("columns", "delimiter", "na_values", "missing", "target_column"), "image": ("image",),
          "tokens": ("text",), "array": ()}  # each input kind -> the keys its reader needs
UNSEEN = ("error", "zeros")  # `predict --unseen-category`: a CSV category the run never trained on is refused, or
                             # encoded as none of its categories (all zeros, as unseen val/test values were)


def check_description(desc: Any, path: Path) -> dict[str, Any]:
    """The checkpoint's description, checked before anything reads it: a missing one (a run of an older dltrain,
    or of a data builder that records none) or a damaged one is one line."""
    check(desc is not None, f"{path} holds no preprocessing description (trained by an older dltrain, or by a data "
          "builder that sets no DataBundle.preprocessing); train the run again with this version to predict")
    check(isinstance(desc, dict) and desc.get("format") == 1 and str(desc.get("input")) in INPUTS
          and isinstance(desc.get("shape"), list) and isinstance(desc.get("num_outputs"), int)
          and isinstance(desc.get("model_args"), dict) and all(k in desc for k in INPUTS[desc["input"]])
          and all(isinstance(desc.get(k, []), list) for k in ("mean", "std")),
          f"{path}: its preprocessing description is malformed; the file is damaged or was edited: use another "
          "checkpoint of the run")
    return desc


class Deployed(nn.Module):
    """`model` behind the run's input scaling: raw inputs in, the model's outputs out (for a standardized
    regression target, in the target's own units). Traced as is by `dltrain export`."""

    def __init__(self, model: nn.Module, divide_by: float | None, mean: torch.Tensor | None,
                 std: torch.Tensor | None, out_mean: torch.Tensor | None, out_std: torch.Tensor | None) -> None:
        super().__init__()
        self.model, self.divide_by = model, divide_by
        for name, value in (("mean", mean), ("std", std), ("out_mean", out_mean), ("out_std", out_std)):
            self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.divide_by is not None:
            x = x / self.divide_by  # pixels 0..255 -> 0..1, the same division as the data builder's
        if self.mean is not None:
            x = (x - self.mean) / self.std
        y = self.model(x)
        if self.out_mean is not None:
            y = y * self.out_std + self.out_mean
        return y


def channel_view(values: list[float], shape: list[int]) -> torch.Tensor:
    """Per-channel values shaped to broadcast against a batch (N, *shape): (C, 1, ...), or a scalar."""
    t = torch.tensor(values, dtype=torch.float32)
    if len(values) == 1 and (not shape or shape[0] != 1):
        return t.reshape([1] * max(len(shape), 1))
    check(bool(shape) and len(values) == shape[0], f"the preprocessing holds {len(values)} means for inputs of "
          f"shape {shape}; the checkpoint is damaged or was edited")
    return t.reshape(len(values), *[1] * (len(shape) - 1))


def deployed(model: nn.Module, desc: dict[str, Any]) -> Deployed:
    """`model` wrapped with the description's scaling (the model's own weights, shared)."""
    shape = desc["shape"]
    mean = channel_view(desc["mean"], shape) if "mean" in desc else None
    std = channel_view(desc["std"], shape) if "std" in desc else None
    target = desc.get("target")
    out_mean = torch.tensor(target["mean"], dtype=torch.float32) if target else None
    out_std = torch.tensor(target["std"], dtype=torch.float32) if target else None
    return Deployed(model, desc.get("divide_by"), mean, std, out_mean, out_std).eval()


def formats(desc: dict[str, Any], task: str) -> dict[str, str]:
    """The exported model's input and output, in words (the export's JSON and the README say the same)."""
    shape = ", ".join(map(str, desc["shape"]))
    inputs = {
        "table": f"float32 (N, {shape}): per row, the raw values of the numeric columns in the order of `columns` "
                 "(a missing value: its `fill`), then for each categorical column a one-hot block over its "
                 "`categories` (an unseen category: all zeros)",
        "image": f"float32 (N, {shape}): pixel values 0..255, channels first, the image converted to "
                 f"{'grayscale' if desc.get('image', {}).get('channels') == 1 else 'RGB'} and resized (bilinear) to "
                 "`image.size` [H, W]",
        "tokens": f"int64 (N, {shape}): word ids, the index in `text.vocab` of each word (`text.rule`)",
        "array": f"{desc['dtype']} (N, {shape}): the raw values, unscaled (the model standardizes them)",
    }
    if task == "regression":
        output = "float32 (N, num_outputs): predictions in the target's own units"
    else:
        output = ("float32 (N, num_outputs): logits over `class_names`, softmax gives probabilities (loss=bce: "
                  "(N, 1), the logit of class 1)")
    return {"model_input": inputs[desc["input"]], "model_output": output}


# --- readers: files -> (one name per sample, raw batch) ------------------------------------------------------
def read_inputs(desc: dict[str, Any], files: list[Path], unseen: str = "error") -> tuple[list[str], torch.Tensor]:
    """Every file's samples, in order, as one raw batch (no scaling: `Deployed` applies it); `unseen`: what a CSV
    category the run never trained on does (UNSEEN)."""
    check(unseen in UNSEEN, f"--unseen-category={unseen} is not a choice; valid: {', '.join(UNSEEN)}")
    reader = partial(table_rows, unseen=unseen) if desc["input"] == "table" else READERS[desc["input"]]
    names: list[str] = []
    batches: list[torch.Tensor] = []
    for path in files:
        check(path.is_file(), f"{path} is not a file; {WANTED[desc['input']](desc)}")
        found, batch = reader(desc, path)
        check(len(batch) > 0, f"{path} holds no samples; {WANTED[desc['input']](desc)}")
        names += found
        batches.append(batch)
    return names, batches[0] if len(batches) == 1 else torch.cat(batches)  # one file: no copy of its batch


def table_rows(desc: dict[str, Any], path: Path, unseen: str = "error") -> tuple[list[str], torch.Tensor]:
    """CSV rows -> (N, F): numeric columns as numbers, then one one-hot block per categorical column."""
    table = read_csv(path, desc["delimiter"])
    columns = desc["columns"]
    lacking = [c["name"] for c in columns if c["name"] not in table.header]
    check(not lacking, f"{path} lacks the column(s) {', '.join(map(repr, lacking))}; {WANTED['table'](desc)}")
    na, fill_ok = set(desc["na_values"]), desc["missing"] == "mean"
    rows, zeroed = [], {}  # zeroed: column -> the cells of categories it never trained on (unseen=zeros)
    for row, (_, line) in zip(table.rows, table.where):
        values: list[float] = []
        for column in columns:
            cell = row[table.header.index(column["name"])].strip()
            where = f"{path}, line {line}, column {column['name']!r}"
            value = None if cell in na else cell_value(cell, column, where, unseen, zeroed)
            check(value is not None or fill_ok, f"{where}: missing value; the run trained with data.missing="
                  f"{desc['missing']}, so the model has no value for it: fill it in")
            values += value if value is not None else missing_value(column)
        rows.append(values)
    if zeroed:
        listed = "; ".join(f"column {name!r}: {', '.join(map(repr, sorted(set(cells))[:5]))} ({len(cells)} row(s))"
                           for name, cells in zeroed.items())
        print(f"dltrain: warning: {path}: categories the run never trained on, encoded as none of its categories "
              f"(all zeros): {listed}", file=sys.stderr, flush=True)
    raw = torch.tensor(rows, dtype=torch.float64).float()  # as the data builder: parsed to float64, then float32
    return [f"{path}:{line}" for _, line in table.where], raw


def cell_value(cell: str, column: dict[str, Any], where: str, unseen: str,
               zeroed: dict[str, list[str]]) -> list[float] | None:
    """One cell's part of the row: [number] or a one-hot list; None when it reads as missing (NaN). A category
    the run never trained on is refused, or (unseen=zeros) encodes as all zeros and is noted in `zeroed`."""
    if column["kind"] == "categorical":
        categories = column["categories"]
        if cell not in categories:
            known = ", ".join(categories[:10]) + (", ..." if len(categories) > 10 else "")
            check(unseen == "zeros", f"{where}: {cell[:40]!r} is not a category the run trained on (known: "
                  f"{known}); fix the value, or give --unseen-category zeros to encode it as none of them")
            zeroed.setdefault(column["name"], []).append(cell)
        return [1.0 if cell == c else 0.0 for c in categories]
    try:
        number = float(cell)
    except ValueError:
        raise ConfigError(f"{where}: {cell[:40]!r} is not a number; the model was trained on numbers in this "
                          "column") from None
    check(math.isnan(number) or abs(number) <= FLOAT32_MAX, f"{where}: {cell!r} is infinite as float32, the model's input type; give a "
          "number within ±3.4e38 or leave the cell empty")
    return None if math.isnan(number) else [number]


def missing_value(column: dict[str, Any]) -> list[float]:
    """data.missing=mean: a numeric cell takes the train mean, a categorical one all zeros."""
    return [column["fill"]] if column["kind"] == "numeric" else [0.0] * len(column["categories"])


def image_file(desc: dict[str, Any], path: Path) -> tuple[list[str], torch.Tensor]:
    """An image -> (1, C, H, W) pixel values 0..255, decoded exactly as data=image_folder decodes."""
    check(path.suffix.lower() in image_folder.EXTENSIONS, f"{path} is not an image file; {WANTED['image'](desc)}")
    image = desc["image"]
    return [str(path)], torch.from_numpy(image_folder.decode([path], tuple(image["size"]), image["channels"])).float()


def text_file(desc: dict[str, Any], path: Path) -> tuple[list[str], torch.Tensor]:
    """A UTF-8 text -> (1, seq_len) token ids with the run's vocabulary (unknown words -> 1, padding 0)."""
    text = desc["text"]
    check(text["tokenizer"] in TOKENIZERS, f"the run's tokenizer {text['tokenizer']!r} is unknown to this dltrain; "
          f"known: {', '.join(TOKENIZERS)}")
    try:
        words = TOKENIZERS[text["tokenizer"]](path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text ({first_line(err)}); {WANTED['tokens'](desc)}") from None
    except OSError as err:
        raise ConfigError(f"{path} is not readable ({err.strerror or first_line(err)})") from None
    index = {word: i for i, word in enumerate(text["vocab"])}
    return [str(path)], imdb.encode([words], index, text["seq_len"])


def array_file(desc: dict[str, Any], path: Path) -> tuple[list[str], torch.Tensor]:
    """An .npy / .npz (array `x_key`, default x) of samples (N, *shape), or one sample of `shape`."""
    check(path.suffix.lower() in (".npy", ".npz"), f"{path} is not an .npy or .npz file; {WANTED['array'](desc)}")
    array = np.asarray(read_array(path, desc.get("x_key", "x"), None, "inputs", limit=limits.PREDICT))
    shape = tuple(desc["shape"])
    if array.shape == shape or (shape == (1,) and array.ndim == 1):  # one sample, or (N,) scalars as (N, 1)
        array = array.reshape(-1, *shape)
    check(array.shape[1:] == shape and array.dtype.kind in "biuf", f"{path} holds {array.dtype} samples of shape "
          f"{array.shape[1:]}; {WANTED['array'](desc)}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: found just below
        values = array.astype(np.float32)
    check(bool(np.isfinite(values).all()), f"{path} holds NaN or infinite values (as float32, the model's input "
          "type: beyond ±3.4e38 is infinite); give finite numbers")
    return [f"{path}[{i}]" for i in range(len(values))], torch.from_numpy(values)


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"imdb": imdb.tokenize}  # by the name a description saves
READERS = {"table": table_rows, "image": image_file, "tokens": text_file, "array": array_file}
WANTED: dict[str, Callable[[dict[str, Any]], str]] = {  # what a right input is, for the error lines
    "table": lambda d: f"give CSV files ({d['delimiter']!r}-separated, a header line) with the columns "
                       f"{', '.join(c['name'] for c in d['columns'])} (any order; the target "
                       f"{d['target_column']!r} and other columns are ignored)",
    "image": lambda d: f"give image files (.png, .jpg, ...); they are converted to {d['image']['channels']} "
                       f"channel(s) and resized to {d['image']['size'][0]}x{d['image']['size'][1]}",
    "tokens": lambda d: "give UTF-8 text files, one review per file",
    "array": lambda d: f"give .npy/.npz files of samples of shape {tuple(d['shape'])} (one sample, or N stacked)",
}


# --- eval: the run's data under the saved preprocessing ------------------------------------------------------
def layout(desc: dict[str, Any]) -> dict[str, Any]:
    """The description less what is a train-split statistic (means, stds, fill values)."""
    kept = {k: v for k, v in desc.items() if k not in ("mean", "std", "target")}
    if "columns" in kept:
        kept["columns"] = [{k: v for k, v in c.items() if k != "fill"} for c in kept["columns"]]
    return kept


def conform(data: Any, saved: dict[str, Any], path: Path, warn: bool = True) -> None:
    """Make `data` (a DataBundle rebuilt from the run's config) use the checkpoint's saved scaling. Data whose
    layout changed (other columns, categories, classes, vocabulary, image size) is an error; data whose train-split
    statistics changed (files edited or added since training) is rescaled to the saved ones, with a warning when
    `warn` (not for other data the user named with `eval --data`, whose train split may differ by design)."""
    rebuilt = data.description()
    if rebuilt is None:
        return
    now, then = layout(rebuilt), layout(saved)
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    check(not changed, f"{path}: the data its config names no longer matches what the run trained on "
          f"({', '.join(changed)} differ); predict on new data with dltrain predict RUN FILE...")
    stats = ("mean", "std", "target")
    if all(rebuilt.get(k) == saved.get(k) for k in stats):
        return
    import sys

    if warn:
        print(f"dltrain: warning: the train split's statistics changed since {path} was written (data files edited "
              "or added); evaluating with the statistics the run trained with", file=sys.stderr)
    shape = saved["shape"]
    for split in (data.train, data.val, data.test):
        if "mean" in saved and "mean" in rebuilt:
            split.x = rescale(split.x, rebuilt, saved, shape)
        if "target" in saved and "target" in rebuilt:
            split.y = rescale(split.y, rebuilt["target"], saved["target"], list(split.y.shape[1:]))


def rescale(x: Any, now: dict[str, Any], then: dict[str, Any], shape: list[int]) -> Any:
    """x standardized by `now`'s mean/std -> by `then`'s (a memory-mapped split takes `then`'s directly)."""
    m0, s0 = channel_view(then["mean"], shape), channel_view(then["std"], shape)
    if not isinstance(x, torch.Tensor):  # data.mapped.MappedRows scales each batch it reads by its own mean/std
        x.mean, x.std = m0.unsqueeze(0).to(x.device), s0.unsqueeze(0).to(x.device)
        return x
    m1, s1 = channel_view(now["mean"], shape), channel_view(now["std"], shape)
    return (x * s1 + m1 - m0) / s0
