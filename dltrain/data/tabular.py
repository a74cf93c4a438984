"""Tables from CSV files (`data=csv`): numeric columns as they are, text columns one-hot, one target column.

Read with the standard library's csv module (the first line is the header). Feature columns whose every
present cell is a number stay numeric and are standardized by the train split's mean and std; any other
column is categorical: one-hot over the categories seen in the train split, so a category that appears only in
val/test (or a missing categorical cell) encodes as all zeros (the run warns of the former; `dltrain predict`
refuses such a category unless told `--unseen-category zeros`). An integer feature that differs in every row
(an id) is a warning too (`DataBundle.warnings`). The task comes from the target (`task: auto`):
text, or integers with at most `max_classes` distinct values, is classification (class names kept for the
confusion matrix); other numbers are regression. A cell in `na_values`, or one that reads as NaN, is missing:
an error naming file, line and column (`missing: error`), or its row is dropped (`drop`), or a numeric feature
takes the train mean and a categorical one all zeros (`mean`; a target is never filled in). An infinite number
is always an error. Several files: `path` may list files with the same columns (pooled, then split by
`fractions`; each class on its own with `stratify`), and `val_path` / `test_path` name files that are those
splits as they are.

The target handling and the pooled split are data/targets.py's, shared with data=arrays.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch

from dltrain.core.registry import ConfigError, Problems, check, first_line
from dltrain.core.rules import Check, Positive, Range
from dltrain.data import DATASETS, DataBundle, Fractions, Split, check_files, task_of
from dltrain.data.features import encode_features
from dltrain.data.limits import FLOAT32_MAX
from dltrain.data.targets import SPLITS, Task, encode_targets, split_pool, strata

KEYS = {"train": "path", "val": "val_path", "test": "test_path"}  # split -> the data key naming its file(s)


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


def aligned_tables(sources: dict[str, str | list[str] | None], delimiter: str) -> dict[str, Table]:
    """The table of each split given a file, columns in the order of the train files'."""
    tables = {s: read_tables([p] if isinstance(p, str) else list(p), delimiter, KEYS[s])
              for s, p in sources.items() if p is not None}
    header = tables["train"].header
    for s, t in tables.items():
        check(set(t.header) == set(header), f"data.{KEYS[s]}: {t.where[0][0]} has columns that differ from "
              f"{tables['train'].where[0][0]}: {column_difference(header, t.header)}")
        if t.header != header:
            order = [t.header.index(h) for h in header]
            t.header, t.rows = header, [[row[i] for i in order] for row in t.rows]
    return tables


def feature_columns(table: Table, target: str, drop: list[str], categorical: list[str]) -> list[str]:
    """The feature columns: every column but the target and the dropped ones (all checked to exist)."""
    header, first = table.header, table.where[0][0]
    check(target in header, f"data.target={target} is not a column of {first}; columns: {', '.join(header)}")
    unknown = [d for d in drop if d not in header]
    check(not unknown, f"data.drop names {', '.join(unknown)}, not columns of {first}; columns: {', '.join(header)}")
    check(target not in drop, f"data.drop lists the target column {target!r}")
    unknown = [c for c in categorical if c not in header or c == target]
    check(not unknown, f"data.categorical names {', '.join(unknown)}, not feature columns of {first}; "
          f"columns: {', '.join(header)}")
    features = [h for h in header if h != target and h not in drop]
    check(bool(features), f"data=csv: no feature columns left besides the target {target!r}")
    return features


@dataclass
class Cells:
    """One split's chosen columns (features, then the target): stripped text and its number, None where missing."""

    text: list[list[str | None]]
    nums: list[list[float | None]]


def parse_cells(tables: dict[str, Table], names: list[str], na: set[str], numeric: dict[str, bool]) -> dict[str, Cells]:
    """Cells of the `names` columns per split; a column with any non-number cell is marked not numeric."""
    parsed = {}
    for s, t in tables.items():
        columns = [t.header.index(h) for h in names]
        text = [[None if row[c].strip() in na else row[c].strip() for c in columns] for row in t.rows]
        nums = [[None if v is None else as_number(v) for v in row] for row in text]
        for row_text, row_nums in zip(text, nums):
            for j, (v, x) in enumerate(zip(row_text, row_nums)):
                if v is not None and x is not None and math.isnan(x):
                    row_text[j] = row_nums[j] = None  # "nan" in any spelling is a missing value
                elif v is not None and x is None:
                    numeric[names[j]] = False
        parsed[s] = Cells(text, nums)
    return parsed


def handle_missing(s: str, table: Table, cells: Cells, names: list[str], missing: str) -> None:
    """data.missing for split `s`: error names the first missing cell, drop removes the rows (in place), mean checks
    that no target is missing (encode_features fills the features)."""
    holes = [(i, j) for i, row in enumerate(cells.text) for j, v in enumerate(row) if v is None]
    if not holes:
        return
    i, j = holes[0]
    if missing == "error":
        raise ConfigError(f"{location(table.where[i], names[j])}: missing value ({len(holes)} missing cell(s) in "
                          f"data.{KEYS[s]}); fill them in, or set data.missing=drop (skip those rows) or "
                          "data.missing=mean")
    target_holes = [(i, j) for i, j in holes if j == len(names) - 1]
    if missing == "mean" and target_holes:
        i, j = target_holes[0]
        raise ConfigError(f"{location(table.where[i], names[-1])}: the target is missing ({len(target_holes)} "
                          f"row(s) in data.{KEYS[s]}); data.missing=mean fills features only: set data.missing=drop "
                          "to skip those rows")
    if missing == "drop":
        keep = sorted(set(range(len(cells.text))) - {i for i, _ in holes})
        check(bool(keep), f"data.missing=drop leaves no rows of data.{KEYS[s]} ({table.where[0][0]}): every row "
              "has a missing cell")
        cells.text, cells.nums = [cells.text[i] for i in keep], [cells.nums[i] for i in keep]
        table.where = [table.where[i] for i in keep]


def check_finite_cells(table: Table, cells: Cells, names: list[str], numeric: dict[str, bool]) -> None:
    """Infinite numbers are never data (nor numbers that float32, the inputs' type, cannot hold)."""
    bad = [(i, j) for i, row in enumerate(cells.nums) for j, x in enumerate(row)
           if numeric[names[j]] and x is not None and abs(x) > FLOAT32_MAX]  # as float32, 1e39 is infinite too
    if bad:
        i, j = bad[0]
        files = sorted({str(table.where[k][0]) for k, _ in bad})
        raise ConfigError(f"{', '.join(files)}: {len(bad)} infinite value(s) (first at "
                          f"{location(table.where[i], names[j])}); replace them (by numbers within float32's "
                          "±3.4e38) or leave the cells empty")


def split_rows(cells: dict[str, Cells], given: set[str], fractions: list[float], seed: int,
               labels: torch.Tensor | None) -> tuple[dict[str, list], dict[str, list]]:
    """Each split's cells (text, numbers): the pooled rows of `path` by fractions (per class with `labels`), the
    files of the `given` splits as they are."""
    pool = split_pool(len(cells["train"].text), fractions, given, seed, labels)
    rows = {s: [cells["train"].text[i] for i in idx.tolist()] for s, idx in pool.items()}
    nums = {s: [cells["train"].nums[i] for i in idx.tolist()] for s, idx in pool.items()}
    for s in given:
        rows[s], nums[s] = cells[s].text, cells[s].nums
    return {s: rows[s] for s in SPLITS if s in rows}, {s: nums[s] for s in SPLITS if s in nums}


def target_values(text: dict[str, list], nums: dict[str, list], numeric: bool) -> dict[str, np.ndarray]:
    """The target (each row's last cell) per split: numbers, or strings for a text column."""
    return {s: (np.array([r[-1] for r in nums[s]], dtype=np.float64) if numeric
                else np.array([r[-1] for r in text[s]], dtype=str)) for s in text}


MIN_ID_ROWS = 20  # an all-unique integer column of fewer rows says nothing about being an id


def feature_warnings(features: list[str], numeric: dict[str, bool], pooled: Cells,
                     unseen: dict[str, list[str]]) -> list[str]:
    """What trains but is likely a mistake: an integer column unique in every row (an id: the model can only
    memorise it), and val/test categories the train split lacks (encoded as all zeros)."""
    found = []
    for j, name in enumerate(features):
        values = [row[j] for row in pooled.nums]
        if (numeric[name] and len(values) >= MIN_ID_ROWS and all(v is not None and v.is_integer() for v in values)
                and len(set(values)) == len(values)):
            found.append(f"data=csv: column {name!r} holds a different integer in each of its {len(values)} rows, "
                         "like an id; as a feature the model can only memorise it: list it in data.drop")
    for name, values in unseen.items():
        shown = ", ".join(map(repr, values[:5])) + (", ..." if len(values) > 5 else "")
        found.append(f"data=csv: column {name!r} has value(s) in val/test that the train split lacks ({shown}); "
                     "they encode as none of its categories (all zeros)")
    return found


def header_of(path: Path, delimiter: str) -> list[str] | None:
    """The first line's column names (None if the file cannot be read: the builder then says why)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [h.strip() for h in next(csv.reader(handle, delimiter=delimiter), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def columns_exist(**options: Any) -> None:
    """At the door: the files are there and the first one's header has the target and every named column."""
    path, target = options["path"], options["target"]
    check(path is not None, "data=csv needs data.path=/path/to/table.csv (or a list of files with the same columns)")
    check(target is not None, "data=csv needs data.target=COLUMN: the name of the column to predict")
    problems = Problems()
    with problems.collect():
        check_files("a CSV file", path=path, val_path=options["val_path"], test_path=options["test_path"])
    first = Path(path if isinstance(path, str) else (list(path) or [""])[0]).expanduser()
    header = header_of(first, options["delimiter"]) if first.is_file() else None
    with problems.collect():
        if header:
            feature_columns(Table(header, [], [(first, 1)]), str(target), [str(d) for d in options["drop"]],
                            [str(c) for c in options["categorical"]])
    problems.raise_if_any()


@DATASETS.register("csv", inputs=columns_exist, task=task_of)
def build_csv(*, seed: int, path: str | list[str] | None = None, target: str | int | None = None,
              val_path: str | list[str] | None = None, test_path: str | list[str] | None = None,
              task: Task = "auto", max_classes: Annotated[int, Range(ge=2)] = 20,
              missing: Literal["error", "drop", "mean"] = "error",
              na_values: list[str] = ("", "NA", "N/A", "NaN", "nan", "null"), drop: list[str | int] = (),
              categorical: list[str | int] = (), max_categories: Annotated[int, Positive] = 100,
              delimiter: Annotated[str, Check(lambda d: len(d) == 1, "must be one character")] = ",",
              standardize_target: bool = True, fractions: Fractions = (0.6, 0.2, 0.2),
              stratify: bool = False) -> DataBundle:
    """Features (N, F) float32: numeric columns standardized by the train split, then one-hot blocks."""
    check(path is not None and target is not None, "data=csv needs data.path=FILE and data.target=COLUMN")
    tables = aligned_tables({"train": path, "val": val_path, "test": test_path}, delimiter)
    target, forced = str(target), [str(c) for c in categorical]
    features = feature_columns(tables["train"], target, [str(d) for d in drop], forced)
    names, na = [*features, target], {str(v).strip() for v in na_values}
    numeric = {h: h not in forced for h in names}
    cells = parse_cells(tables, names, na, numeric)
    for s, table in tables.items():
        handle_missing(s, table, cells[s], names, missing)
        check_finite_cells(table, cells[s], names, numeric)

    where = f"target column {target!r}"
    labels = strata(target_values({s: c.text for s, c in cells.items()}, {s: c.nums for s, c in cells.items()},
                                  numeric[target]), task, max_classes, where) if stratify else None
    rows, nums = split_rows(cells, set(tables) - {"train"}, list(fractions), seed, labels)
    encoded = encode_features(features, numeric, rows, nums, max_categories)
    y = encode_targets(target_values(rows, nums, numeric[target]), task, max_classes, standardize_target, where)
    splits = [Split(encoded.x[s], y.y[s]) for s in SPLITS]
    prep = {"data": "csv", "input": "table", "columns": encoded.columns, "mean": encoded.mean, "std": encoded.std,
            "target_column": target, "delimiter": delimiter, "na_values": sorted(na), "missing": missing,
            **({"target": y.scaling} if y.scaling else {})}
    return DataBundle(*splits, task=y.task, num_outputs=y.num_outputs, class_names=y.class_names,
                      chance_mse=y.chance_mse, preprocessing=prep,
                      warnings=feature_warnings(features, numeric, cells["train"], encoded.unseen))
