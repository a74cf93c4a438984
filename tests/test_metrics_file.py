"""metrics.json has one owner (dltrain/core/metrics_file.py): its round trip, the reading of a missing or damaged
file, the statuses, the summary line, the number formats; and no other module of the package names the file."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from dltrain.core import metrics_file

PACKAGE = Path(__file__).resolve().parents[1] / "dltrain"
OWNER = PACKAGE / "core" / "metrics_file.py"
REPORT = {"status": "completed", "stop_reason": "max_epochs (3) reached", "epochs": 3, "monitor": "val/loss",
          "mode": "min", "best": 0.25, "best_epoch": 2, "final": {"train/loss": 0.3, "val/loss": 0.26, "val/acc": 0.9},
          "test": {"test/loss": 0.27, "test/acc": 0.91234}, "train_seconds": 1.5}


def test_a_report_reads_back_as_written_in_strict_json(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics_file.write(run_dir, {**REPORT, "samples_per_sec": math.inf})
    text = metrics_file.path(run_dir).read_text()
    assert "Infinity" not in text and '"samples_per_sec": null' in text  # strict JSON: any reader takes it
    assert metrics_file.load(run_dir) == {**REPORT, "samples_per_sec": None}
    assert metrics_file.read(run_dir) == metrics_file.load(run_dir)
    assert [p.name for p in run_dir.iterdir()] == ["metrics.json"]  # written atomically: no temp file left
    assert metrics_file.find(tmp_path) == [(run_dir, metrics_file.load(run_dir))]


@pytest.mark.parametrize("content, what", [("{\"status\": ", "not JSON: Expecting value"),
                                           ("[1, 2]", "a JSON list, not an object")])
def test_a_damaged_file_is_one_line_and_reads_as_unreadable(tmp_path, content, what) -> None:
    metrics_file.path(tmp_path).write_text(content)
    with pytest.raises(ValueError) as raised:
        metrics_file.load(tmp_path)
    line = str(raised.value)
    assert line.startswith(f"{tmp_path / 'metrics.json'} is damaged ({what}") and "\n" not in line
    assert metrics_file.read(tmp_path) == {"status": "unreadable"}
    assert metrics_file.status_of(metrics_file.read(tmp_path)) not in metrics_file.ENDED_OK


def test_a_run_without_a_report_reads_as_none(tmp_path) -> None:
    assert metrics_file.read(tmp_path) == {} and metrics_file.status_of({}) == "?"
    with pytest.raises(FileNotFoundError):
        metrics_file.load(tmp_path)
    assert metrics_file.find(tmp_path) == []


def test_status_of_a_report() -> None:
    nonfinite = "non-finite val/loss or train/loss at epoch 2"
    assert metrics_file.status_of(REPORT) == "completed"
    assert metrics_file.status_of({"status": "completed", "stop_reason": nonfinite}) == "diverged"  # an older file
    assert metrics_file.status_of({"status": "diverged", "stop_reason": nonfinite}) == "diverged"
    assert metrics_file.ended_status(nonfinite) == "diverged"
    assert metrics_file.ended_status("early stopping: val/loss did not improve") == "completed"
    failed = metrics_file.failure("error: boom", 0.12345, ["optim=adam"])
    assert failed == {"status": "failed", "error": "error: boom", "wall_seconds": 0.123, "overrides": ["optim=adam"]}
    assert metrics_file.status_of(failed) == "failed" and "failed" not in metrics_file.ENDED_OK


def test_the_wall_time_goes_right_after_the_training_time() -> None:
    timed = metrics_file.with_wall_seconds(REPORT, 2.34567)
    keys = list(timed)
    assert keys[keys.index("train_seconds") + 1] == "wall_seconds" and timed["wall_seconds"] == 2.346
    assert list(metrics_file.with_wall_seconds({"status": "failed"}, 1.0)) == ["status", "wall_seconds"]


def test_the_summary_line_of_a_run(tmp_path) -> None:
    assert metrics_file.summary_text(REPORT, tmp_path) == (
        "\nbest val/loss 0.25 at epoch 2\nfinal  val/loss 0.26  val/acc 0.9\ntest   test/loss 0.27  test/acc 0.9123\n"
        f"epochs 3, stopped: max_epochs (3) reached\nrun dir {tmp_path}")
    bare = {**REPORT, "best": None, "final": {"train/loss": 0.3}, "test": {}}
    assert "best val/loss n/a\nfinal  (no val split)\ntest   (no test split)\n" in metrics_file.summary_text(bare, tmp_path)


def test_one_number_format_per_value_and_per_column() -> None:
    assert [metrics_file.number(v) for v in (0.5, 3, 5e-5, None, math.nan, True)] == \
        ["0.5000", "3", "5.000e-05", "-", "-", "-"]
    assert metrics_file.number(3.21, 1) == "3.2"
    assert metrics_file.numbers([0.5, 0.12346, None, math.nan]) == ["0.5000", "0.1235", "-", "-"]
    assert metrics_file.numbers([0.5, 5e-5]) == ["5.000e-01", "5.000e-05"]  # one outlier: the whole column scientific


def file_names(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """'file:line' of each string in the module's code (docstrings aside) that is metrics.json as a file name, path
    or pattern (one word ending in it); prose that mentions the file is no use of it."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [f"{path.relative_to(root)}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and node.value.strip().endswith(metrics_file.NAME) and len(node.value.split()) == 1]


def test_only_the_owner_names_metrics_json() -> None:
    """Every module that writes, reads or looks for a run's report goes through dltrain/core/metrics_file.py."""
    assert len(file_names(OWNER)) == 1 and 'NAME = "metrics.json"' in OWNER.read_text()  # once, as NAME
    others = [p for p in sorted(PACKAGE.rglob("*.py")) if p != OWNER and "starter" not in p.parts]
    assert [hit for path in others for hit in file_names(path)] == []


def test_the_name_check_finds_a_direct_use(tmp_path) -> None:
    module = tmp_path / "probe.py"
    module.write_text('"""Writes metrics.json."""\nimport json\n\n\ndef f(run_dir):\n    """Reads metrics.json."""\n'
                      '    return json.loads((run_dir / "metrics.json").read_text()), "no metrics.json here"\n'
                      'PATTERN = "*/metrics.json"\n')
    assert sorted(file_names(module, tmp_path)) == ["probe.py:7", "probe.py:8"]  # the path and the pattern, not the prose
