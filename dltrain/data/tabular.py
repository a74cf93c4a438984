"""Tables from CSV files (`data=csv`): numeric columns as they are, text columns one-hot, one target column.

Read with the standard library's csv module (the first line is the header). Feature columns whose every
present cell is a number stay numeric and are standardized by the train split's mean and std; any other
column is categorical: one-hot over the categories seen in the train split, so a category that appears only in
val/test (or a missing categorical cell) encodes as all zeros. The task comes from the target (`task: auto`):
text, or integers with at most `max_classes` distinct values, is classification (class names kept for the
confusion matrix); other numbers are regression. A cell in `na_values`, or one that reads as NaN, is missing:
an error naming file, line and column (`missing: error`), or its row is dropped (`drop`), or a numeric feature
takes the train mean and a categorical one all zeros (`mean`; a target is never filled in). An infinite number
is always an error. Several files: `path` may list files with the same columns (pooled, then split by
`fractions`), and `val_path` / `test_path` name files that are those splits as they are.

The target handling (`encode_targets`) and the pooled split (`split_pool`) are shared with data=arrays.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dltrain.data import DATASETS, DataBundle, Split, check_fractions, scaling, split_indices, train_stats
from dltrain.data.features import SPLITS, encode_features
from dltrain.registry import ConfigError, check, first_line

Task = Literal["auto", "classification", "regression"]


# --- shared with data=arrays ---------------------------------------------------------------------------------
def split_pool(n: int, fractions: list[float], given: set[str], seed: int) -> dict[str, torch.Tensor]:
    """Indices of a pooled set's train split and of each split not `given` by its own file. Without given
    splits the pool is split by `fractions` as they are (a sum below 1 leaves samples out); with some, the pool
    is shared among train and the missing ones in proportion to their fractions (test from its own file:
    train/val by f_train : f_val)."""
    f = check_fractions(list(fractions))
    if given:
        shares = [f[0], 0.0 if "val" in given else f[1], 0.0 if "test" in given else f[2]]
        total = sum(shares)
        f = (shares[0] / total, shares[1] / total, shares[2] / total)
    return {name: idx for name, idx in zip(SPLITS, split_indices(n, f, seed)) if name == "train" or name not in given}


@dataclass
class Targets:
    """Encoded targets of the three splits and what the bundle needs to know about them."""

    y: dict[str, torch.Tensor]  # split -> (N,) long class indices, or (N, K) float regression targets
    task: str
    num_outputs: int
    class_names: list[str] | None = None
    chance_mse: float | None = None
    scaling: dict[str, list[float]] | None = None  # regression: the train mean/std the targets were scaled by


def encode_targets(values: dict[str, np.ndarray], task: Task, max_classes: int, standardize_target: bool,
                   where: str) -> Targets:
    """Class indices or regression targets from raw target values per split (numbers, or strings for text).

    task=auto: text, or integer values with at most `max_classes` distinct values, is classification; other
    numbers are regression. Classes are the sorted distinct values of all splits (numerically for numbers).
    Regression targets are scaled by the train split's mean and std when `standardize_target`, and
    chance_mse is then the train split's variance in those units (the MSE of predicting its mean)."""
    pooled = np.concatenate([as_2d(v) for v in values.values()])
    numeric = pooled.dtype.kind in "biuf"
    integral = numeric and bool(np.all(np.mod(pooled, 1) == 0))
    distinct = np.unique(pooled)
    if task == "auto":
        task = "classification" if not numeric or (integral and len(distinct) <= max_classes) else "regression"
    if task == "regression":
        check(numeric, f"{where} has text values (e.g. {str(distinct[0])!r}): data.task=regression needs numbers")
        ys = {k: torch.from_numpy(as_2d(v).astype(np.float32)) for k, v in values.items()}
        scale = None
        if standardize_target:
            mean, std = train_stats(ys["train"])
            ys, scale = {k: (v - mean) / std for k, v in ys.items()}, scaling(mean, std)
        train = ys["train"]
        chance = float(((train - train.mean(0)) ** 2).mean()) if len(train) else None
        return Targets(ys, "regression", train.shape[1], chance_mse=chance, scaling=scale)
    check(pooled.shape[1] == 1, f"{where}: classification takes one label per sample, got {pooled.shape[1]} values "
          "per sample (give class indices, or set data.task=regression)")
    check(len(distinct) >= 2, f"{where} has a single value ({str(distinct[0])!r}): nothing to classify")
    check(len(distinct) <= 10_000, f"{where} has {len(distinct)} distinct values: too many classes "
          "(set data.task=regression for a numeric target)")
    names = [str(int(v)) if integral else str(v) for v in distinct.tolist()]
    ys = {k: torch.from_numpy(np.searchsorted(distinct, v.reshape(-1)).astype(np.int64)) for k, v in values.items()}
    return Targets(ys, "classification", len(distinct), class_names=names)


def as_2d(v: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, K), also for N = 0."""
    return v.reshape(len(v), math.prod(v.shape[1:]))


# --- CSV -----------------------------------------------------------------------------------------------------
@dataclass
class Table:
    """Rows of one or more CSV files with the same columns; `where[i]` = (file, line) of row i."""

    header: list[str]
    rows: list[list[str]]
    where: list[tuple[Path, int]]


def read_csv(path: Path, delimiter: str) -> Table:
    check(path.is_file(), f"data=csv: {path} is not a file")
    line = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's BOM is not a name
            reader = csv.reader(handle, delimiter=delimiter, strict=True)
            header = [h.strip() for h in next(reader, [])]
            check(bool(header) and any(header), f"{path} is empty; a CSV starts with a header line of column names")
            dupes = sorted({h for h in header if header.count(h) > 1})
            check(not dupes, f"{path}: the header names column(s) {', '.join(map(repr, dupes))} more than once")
            rows, where = [], []
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # a blank line
                check(len(row) == len(header), f"{path}, line {line}: {len(row)} fields, but the header has "
                      f"{len(header)} ({delimiter!r}-separated)")
                rows.append(row)
                where.append((path, line))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text ({first_line(err)}); save it as UTF-8 CSV") from None
    except csv.Error as err:
        raise ConfigError(f"{path}, line {line + 1}: not valid CSV ({first_line(err)})") from None
    except OSError as err:
        raise ConfigError(f"{path} is not readable ({err.strerror or first_line(err)})") from None
    check(bool(rows), f"{path} has a header but no rows")
    return Table(header, rows, where)


def read_tables(paths: list[str], delimiter: str, key: str) -> Table:
    """Several files with the same columns (in any order) as one table, columns in the first file's order."""
    check(bool(paths), f"data.{key} is an empty list; give one CSV file or several")
    tables = [read_csv(Path(p).expanduser(), delimiter) for p in paths]
    first = tables[0]
    for other in tables[1:]:
        check(set(other.header) == set(first.header), f"{other.where[0][0]} has columns that differ from "
              f"{first.where[0][0]}: {column_difference(first.header, other.header)}")
        order = [other.header.index(h) for h in first.header]
        first.rows += [[row[i] for i in order] for row in other.rows]
        first.where += other.where
    return first


def column_difference(a: list[str], b: list[str]) -> str:
    only_a, only_b = [h for h in a if h not in b], [h for h in b if h not in a]
    return "; ".join(part for part in (f"only in the first: {', '.join(only_a)}" if only_a else "",
                                       f"only in this one: {', '.join(only_b)}" if only_b else "") if part)


def as_number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def location(where: tuple[Path, int], column: str) -> str:
    return f"{where[0]}, line {where[1]}, column {column!r}"


@DATASETS.register("csv")
def build_csv(*, seed: int, path: str | list[str] | None = None, target: str | int | None = None,
              val_path: str | list[str] | None = None, test_path: str | list[str] | None = None,
              task: Task = "auto", max_classes: int = 20, missing: Literal["error", "drop", "mean"] = "error",
              na_values: list[str] = ("", "NA", "N/A", "NaN", "nan", "null"), drop: list[str | int] = (),
              categorical: list[str | int] = (),
              max_categories: int = 100, delimiter: str = ",", standardize_target: bool = True,
              fractions: list[float] = (0.6, 0.2, 0.2)) -> DataBundle:
    """Features (N, F) float32: numeric columns standardized by the train split, then one-hot blocks."""
    check(path is not None, "data=csv needs data.path=/path/to/table.csv (or a list of files with the same columns)")
    check(target is not None, "data=csv needs data.target=COLUMN: the name of the column to predict")
    check(max_classes >= 2, f"data.max_classes={max_classes} must be >= 2")
    check(max_categories >= 1, f"data.max_categories={max_categories} must be >= 1")
    check(len(delimiter) == 1, f"data.delimiter={delimiter!r} must be one character")
    check_fractions(list(fractions))
    sources = {"train": path, "val": val_path, "test": test_path}
    keys = {"train": "path", "val": "val_path", "test": "test_path"}
    tables = {s: read_tables([p] if isinstance(p, str) else list(p), delimiter, keys[s])
              for s, p in sources.items() if p is not None}
    header = tables["train"].header
    for s, t in tables.items():
        check(set(t.header) == set(header), f"data.{keys[s]}: {t.where[0][0]} has columns that differ from "
              f"{tables['train'].where[0][0]}: {column_difference(header, t.header)}")
        if t.header != header:
            order = [t.header.index(h) for h in header]
            t.rows = [[row[i] for i in order] for row in t.rows]
    target = str(target)
    check(target in header, f"data.target={target} is not a column of {tables['train'].where[0][0]}; "
          f"columns: {', '.join(header)}")
    dropped = [str(d) for d in drop]
    unknown = [d for d in dropped if d not in header]
    check(not unknown, f"data.drop names {', '.join(unknown)}, not columns of {tables['train'].where[0][0]}; "
          f"columns: {', '.join(header)}")
    check(target not in dropped, f"data.drop lists the target column {target!r}")
    forced = [str(c) for c in categorical]
    unknown = [c for c in forced if c not in header or c == target]
    check(not unknown, f"data.categorical names {', '.join(unknown)}, not feature columns of "
          f"{tables['train'].where[0][0]}; columns: {', '.join(header)}")
    features = [h for h in header if h != target and h not in dropped]
    check(bool(features), f"data=csv: no feature columns left besides the target {target!r}")
    columns = [header.index(h) for h in [*features, target]]
    na = {str(v).strip() for v in na_values}

    # cells -> numbers where possible; missing cells and their first location
    parsed: dict[str, list[list[float | None]]] = {}
    text: dict[str, list[list[str | None]]] = {}
    numeric = {h: h not in forced for h in [*features, target]}
    for s, t in tables.items():
        cells = [[None if row[c].strip() in na else row[c].strip() for c in columns] for row in t.rows]
        nums = [[None if v is None else as_number(v) for v in row] for row in cells]
        for row_cells, row_nums in zip(cells, nums):
            for j, (v, x) in enumerate(zip(row_cells, row_nums)):
                if v is not None and x is not None and math.isnan(x):
                    row_cells[j] = row_nums[j] = None  # "nan" in any spelling is a missing value
                elif v is not None and x is None:
                    numeric[(*features, target)[j]] = False
        text[s], parsed[s] = cells, nums
    names = [*features, target]

    def missing_cells(s: str) -> list[tuple[int, int]]:
        return [(i, j) for i, row in enumerate(text[s]) for j, v in enumerate(row) if v is None]

    for s in tables:
        holes = missing_cells(s)
        if not holes:
            continue
        i, j = holes[0]
        where = location(tables[s].where[i], names[j])
        if missing == "error":
            raise ConfigError(f"{where}: missing value ({len(holes)} missing cell(s) in data.{keys[s]}); fill "
                              "them in, or set data.missing=drop (skip those rows) or data.missing=mean")
        if missing == "mean":
            target_holes = [(i, j) for i, j in holes if j == len(features)]
            if target_holes:
                i, j = target_holes[0]
                raise ConfigError(f"{location(tables[s].where[i], target)}: the target is missing "
                                  f"({len(target_holes)} row(s) in data.{keys[s]}); data.missing=mean fills "
                                  "features only: set data.missing=drop to skip those rows")
        if missing == "drop":
            keep = sorted(set(range(len(text[s]))) - {i for i, _ in holes})
            check(bool(keep), f"data.missing=drop leaves no rows of data.{keys[s]} ({tables[s].where[0][0]}): "
                  "every row has a missing cell")
            text[s] = [text[s][i] for i in keep]
            parsed[s] = [parsed[s][i] for i in keep]
            tables[s].where = [tables[s].where[i] for i in keep]

    for s in tables:  # infinite numbers are never data
        bad = [(i, j) for i, row in enumerate(parsed[s]) for j, x in enumerate(row)
               if numeric[names[j]] and x is not None and math.isinf(x)]
        if bad:
            i, j = bad[0]
            files = sorted({str(tables[s].where[k][0]) for k, _ in bad})
            raise ConfigError(f"{', '.join(files)}: {len(bad)} infinite value(s) (first at "
                              f"{location(tables[s].where[i], names[j])}); replace them or leave the cells empty")

    # the splits: the pooled rows of `path` by fractions, other files as their split
    pool = split_pool(len(text["train"]), list(fractions), set(tables) - {"train"}, seed)
    rows = {s: [text["train"][i] for i in idx.tolist()] for s, idx in pool.items()}
    nums = {s: [parsed["train"][i] for i in idx.tolist()] for s, idx in pool.items()}
    for s in set(tables) - {"train"}:
        rows[s], nums[s] = text[s], parsed[s]

    encoded = encode_features(features, numeric, rows, nums, max_categories)
    raw_y = {s: (np.array([r[-1] for r in nums[s]], dtype=np.float64) if numeric[target]
                 else np.array([r[-1] for r in rows[s]], dtype=str)) for s in SPLITS}
    y = encode_targets(raw_y, task, max_classes, standardize_target, f"target column {target!r}")
    splits = [Split(encoded.x[s], y.y[s]) for s in SPLITS]
    prep = {"data": "csv", "input": "table", "columns": encoded.columns, "mean": encoded.mean, "std": encoded.std,
            "target_column": target, "delimiter": delimiter, "na_values": sorted(na), "missing": missing,
            **({"target": y.scaling} if y.scaling else {})}
    return DataBundle(*splits, task=y.task, num_outputs=y.num_outputs, class_names=y.class_names,
                      chance_mse=y.chance_mse, preprocessing=prep)
