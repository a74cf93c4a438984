"""The seed summary below the runs table (dltrain/sweep/seeds_table.py): each configuration's n and mean ± sample
std over its seeds, best first. The arithmetic on run folders with real metrics.json (written by its owner) and
config.yaml files; one real sweep end to end, whose printed numbers are recomputed from its runs' metrics.json."""
from __future__ import annotations

import copy
import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from dltrain.core import metrics_file
from dltrain.core.metrics_file import numbers, spreads
from dltrain.sweep.seeds_table import seeds_table
from tests.conftest import cli, compose

TITLE = "configuration(s) over trainer.seed"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The default run's resolved config, as a run's config.yaml holds it."""
    return compose([])


def fake_run(root: Path, config: dict[str, Any], lr: str, seed: int, best: float | None, acc: float | None = None,
             status: str = "completed", epochs: int = 2, with_config: bool = True, more: tuple[str, ...] = (),
             **changed: Any) -> Path:
    """A run folder `optim.lr=LR,trainer.seed=SEED` with a metrics.json and (unless with_config=False) a config.yaml
    whose values are the default run's with these overrides and `more` (`changed`: config values, `section__key`)."""
    overrides = [f"optim.lr={lr}", f"trainer.seed={seed}", f"trainer.max_epochs={epochs}", *more]
    folder = root / f"optim.lr={lr},trainer.seed={seed}"
    folder.mkdir(parents=True)
    report = {"status": status, "stop_reason": "non-finite val/loss at epoch 2" if status == "diverged"
              else "max_epochs reached", "epochs": epochs, "monitor": "val/loss", "mode": "min", "best": best,
              "best_epoch": 1, "final": {"val/loss": best}, "test": {"test/loss": best, "test/acc": acc},
              "overrides": overrides}
    if status == "failed":
        report = metrics_file.failure("error: boom", 0.1, overrides)
    metrics_file.write(folder, report)
    if with_config:
        cfg = copy.deepcopy(config)
        cfg["optim"]["lr"], cfg["trainer"]["seed"], cfg["trainer"]["max_epochs"] = float(lr), seed, epochs
        cfg["overrides"] = overrides
        for key, value in changed.items():
            part, name = key.split("__")
            cfg[part][name] = value
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder


def body(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """The summary's header words and its rows as cells (split on two spaces or more; the best row's `*` off)."""
    assert lines[0] == "" and TITLE in lines[1], lines
    header = lines[2].split()
    return header, [re.split(r"\s{2,}", line.lstrip("* ").strip()) for line in lines[3:]]


def expected(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values)


def test_means_and_sample_stds_best_first_with_a_diverged_seed_counted_not_averaged(tmp_path, config) -> None:
    bests = {"0.1": [0.5, 0.7, 0.65], "0.01": [0.9, 0.8, 1.3]}
    accs = {"0.1": [0.91, 0.85, 0.88], "0.01": [0.6, 0.7, 0.2]}
    for lr in bests:
        for seed, (best, acc) in enumerate(zip(bests[lr], accs[lr])):
            fake_run(tmp_path, config, lr, seed, best, acc)
    fake_run(tmp_path, config, "0.01", 3, 0.01, 0.99, status="diverged")  # a finite best before it diverged
    header, rows = body(seeds_table(tmp_path))
    assert header == ["optim.lr", "n", "best", "test/acc", "test/loss"]
    assert [row[0] for row in rows] == ["0.1", "0.01"]  # lowest mean best val/loss first
    assert rows[1][1] == "4 (1 diverged)" and rows[0][1] == "3"
    means = {lr: expected(bests[lr]) for lr in bests}  # the diverged run's 0.01 is not in them
    mean_texts = numbers([means["0.1"][0], means["0.01"][0]])
    std_texts = numbers([means["0.1"][1], means["0.01"][1]])
    assert [row[2] for row in rows] == [f"{m} ± {s}" for m, s in zip(mean_texts, std_texts)]
    acc_means = [expected(accs[lr]) for lr in ("0.1", "0.01")]
    assert rows[0][3] == f"{numbers([a[0] for a in acc_means])[0]} ± {numbers([a[1] for a in acc_means])[0]}"
    assert seeds_table(tmp_path)[3].startswith("*") and not seeds_table(tmp_path)[4].startswith("*")


def test_highest_first_for_a_maximised_metric(tmp_path, config) -> None:
    for lr, values in (("0.1", [0.8, 0.9]), ("0.01", [0.95, 0.97])):
        for seed, value in enumerate(values):
            folder = fake_run(tmp_path, config, lr, seed, value, value)
            metrics_file.write(folder, {**metrics_file.load(folder), "monitor": "val/acc", "mode": "max"})
    lines = seeds_table(tmp_path)
    assert "by mean best val/acc, highest first (*)" in lines[1]
    assert [row[0] for row in body(lines)[1]] == ["0.01", "0.1"]


def test_one_run_is_said_so_failed_runs_join_by_their_overrides_and_no_seeds_no_summary(tmp_path, config) -> None:
    fake_run(tmp_path, config, "0.1", 0, 0.5, 0.9)
    fake_run(tmp_path, config, "0.1", 1, 0.6, 0.8)
    fake_run(tmp_path, config, "0.01", 0, 0.7, 0.7)
    fake_run(tmp_path, config, "0.01", 1, None, with_config=False, status="failed")  # refused at the door
    header, rows = body(seeds_table(tmp_path))
    assert rows[1][:3] == ["0.01", "2 (1 failed)", "0.7000 (1 run)"]  # a mean of one run, no std
    assert seeds_table(tmp_path / "optim.lr=0.1,trainer.seed=0") == []  # one run
    lone = tmp_path / "lrs"
    fake_run(lone, config, "0.1", 0, 0.5, 0.9)
    fake_run(lone, config, "0.01", 0, 0.7, 0.7)
    assert seeds_table(lone) == []  # a sweep without seeds: no summary
    twice = tmp_path / "same seed"
    fake_run(twice, config, "0.1", 0, 0.5, 0.9)
    fake_run(twice / "again", config, "0.1", 0, 0.5, 0.9)
    assert seeds_table(twice) == []  # two runs, one seed: nothing summarised over seeds


def test_configurations_are_told_apart_by_their_config_not_by_their_swept_values(tmp_path, config) -> None:
    """A re-run of the sweep into the same folder with another trainer.max_epochs, a `+key` given to some runs, an
    edited conf file: not the same configuration. A resumed run, and a key only some configs have that no
    override set (a later release's), do not split one."""
    plan = {"swept": {"optim.lr": ["0.1"], "trainer.seed": ["0", "1", "2", "3"]}}  # the sweep's sweep.json
    (tmp_path / "sweep.json").write_text(json.dumps(plan))
    fake_run(tmp_path / "first", config, "0.1", 0, 0.5, 0.9)
    fake_run(tmp_path / "first", config, "0.1", 1, 0.7, 0.8, trainer__resume="first/optim.lr=0.1,trainer.seed=1")
    fake_run(tmp_path / "later", config, "0.1", 2, 0.3, 0.95, epochs=5, trainer__new_key=1)
    fake_run(tmp_path / "later", config, "0.1", 3, 0.4, 0.96, epochs=5, trainer__new_key=1)
    header, rows = body(seeds_table(tmp_path))
    assert header[:3] == ["optim.lr", "trainer.max_epochs", "n"]  # the unswept key they differ in: a column
    assert [row[:3] for row in rows] == [["0.1", "5", "2"], ["0.1", "2", "2"]]
    assert rows[1][3] == f"{numbers([0.6])[0]} ± {numbers([statistics.stdev([0.5, 0.7])])[0]}"
    for seed in (4, 5):  # a key that only these runs have, set on their command line: another configuration
        fake_run(tmp_path / "plus", config, "0.1", seed, 0.2, 0.97, more=("+reg.extra=1",), reg__extra=1)
    header, rows = body(seeds_table(tmp_path))
    assert header[:4] == ["optim.lr", "reg.extra", "trainer.max_epochs", "n"]
    assert [row[:4] for row in rows] == [["0.1", "1", "2", "2"], ["0.1", "-", "5", "2"], ["0.1", "-", "2", "2"]]
    for seed in (6, 7):  # the same command line after an edit of conf/model/mlp.yaml: the overrides cannot tell
        fake_run(tmp_path / "edited", config, "0.1", seed, 0.25, 0.9, model__hidden=[32])
    header, rows = body(seeds_table(tmp_path))
    assert header[:4] == ["optim.lr", "model.hidden", "reg.extra", "trainer.max_epochs"] and len(rows) == 4
    assert [row[:5] for row in rows][1] == ["0.1", "[32]", "-", "2", "2"]


def test_the_summary_fits_the_width_and_spreads_format_one_column_one_way(tmp_path, config) -> None:
    for lr in ("0.1", "0.01"):
        for seed in range(3):
            fake_run(tmp_path, config, f"{lr}", seed, 0.5 + seed / 10 + float(lr), 0.9)
    lines = seeds_table(tmp_path, 50)
    assert max(len(line) for line in lines) <= 50 and "test/loss" not in lines[2]  # dropped, not wrapped
    assert spreads([1.5, 22.25, None], [0.01, None, None]) == [" 1.5000 ± 0.0100", "22.2500 (1 run) ", "-"]
    assert spreads([0.5, 0.25], [1e-5, 0.01]) == ["0.5000 ± 1.000e-05", "0.2500 ± 1.000e-02"]  # one std format


def cells_of(text: str) -> dict[str, list[str]]:
    """optim.lr -> the summary row's cells, from a command's output."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if TITLE in line)
    return {row[0]: row for row in body(["", *lines[start:start + 4]])[1]}


def test_a_real_seed_sweep_prints_the_means_and_stds_of_its_runs(tmp_path) -> None:
    result = cli(["-m", "optim.lr=0.01,0.1", "trainer.seed=0,1,2", "trainer.max_epochs=2",
                  "trainer.log_every_n_steps=0", "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "sweep"
    runs = {lr: [metrics_file.load(root / f"optim.lr={lr},trainer.seed={s}") for s in range(3)] for lr in ("0.1", "0.01")}
    order = sorted(runs, key=lambda lr: statistics.fmean(r["best"] for r in runs[lr]))
    listed = cli(["runs", "sweep"], cwd=tmp_path, env={"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    assert result.stdout.index("6 run(s) in sweep") < result.stdout.index(TITLE)  # below the runs table
    for text in (result.stdout, listed.stdout):
        cells = cells_of(text)
        assert list(cells) == order
        for column, value in ((2, lambda r: r["best"]), (3, lambda r: r["test"]["test/acc"]),
                              (4, lambda r: r["test"]["test/loss"])):
            stats = [expected([value(r) for r in runs[lr]]) for lr in order]
            means, stds = numbers([m for m, _ in stats]), numbers([s for _, s in stats])
            assert [cells[lr][column] for lr in order] == [f"{m} ± {s}" for m, s in zip(means, stds)]
            assert [cells[lr][1] for lr in order] == ["3", "3"]
