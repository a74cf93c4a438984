"""`dltrain diff RUN_A RUN_B`: identical runs are identical (bitwise), a schedule changed at a known epoch is found
at exactly that epoch, only differing config keys are listed, bad input is one line with exit code 2."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import FAST, parse, run

BASE = [*FAST, "trainer.max_epochs=5"]
STEP_A = [*BASE, "sched=step", "sched.boundaries=[2]"]  # lr0 for t < 2, lr0*gamma from t = 2 (t = epochs done)
STEP_B = [*BASE, "sched=step", "sched.boundaries=[3]"]


def command(args: list[str]) -> tuple[int, str, str]:
    """`dltrain diff ...` in this process."""
    from typer.testing import CliRunner

    from dltrain.cli.commands import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four tiny real runs: two with the same config and seed, two whose step schedules differ."""
    root = tmp_path_factory.mktemp("diff")
    folders = {"same1": BASE, "same2": BASE, "step_a": STEP_A, "step_b": STEP_B}
    for name, overrides in folders.items():
        run(overrides, root / name)
    return {name: root / name for name in folders}


def test_same_config_and_seed_is_identical_bitwise(runs: dict[str, Path]) -> None:
    from dltrain.tools.run_diff import first_difference, load_record

    a, b = load_record(runs["same1"]), load_record(runs["same2"])
    assert first_difference(a, b) is None
    assert "val/loss" in a.history and len(a.history["val/loss"]) == 5
    code, out, _ = command(["diff", str(runs["same1"]), str(runs["same2"])])
    assert code == 0, out
    assert "config: equal" in out
    assert "history: identical (bitwise" in out
    assert max(len(line) for line in out.splitlines() if not line.startswith(("A  ", "B  "))) <= 100


def expected_first_epoch(a: list[str], b: list[str]) -> int:
    """From the schedules themselves: the first t (epochs done) at which the two rates differ; epoch t + 1 is the
    first trained at it, so the first whose logged lr, losses and metrics differ."""
    from dltrain.core.sched import build_schedule

    lr_a, lr_b = (build_schedule(parse(o).sched, parse(o).optim.kwargs["lr"], 5) for o in (a, b))
    t = next(t for t in range(5) if lr_a(t) != lr_b(t))
    assert t == min(2, 3)  # the closed form: step schedules with boundaries [2] and [3] part at t = 2
    return t + 1


def test_schedule_changed_at_a_known_epoch_is_found_there(runs: dict[str, Path]) -> None:
    from dltrain.tools.run_diff import config_changes, first_difference, load_record

    a, b = load_record(runs["step_a"]), load_record(runs["step_b"])
    epoch, differing = first_difference(a, b)
    assert epoch == expected_first_epoch(STEP_A, STEP_B) == 3
    tags = {tag for tag, _, _ in differing}
    assert {"z_more/lr", "train/loss", "val/loss"} <= tags
    lr = dict((tag, (x, y)) for tag, x, y in differing)["z_more/lr"]
    lr0 = parse(STEP_A).optim.kwargs["lr"]  # A has stepped down (gamma 0.1) at t = 2, B not yet
    assert lr == (pytest.approx(lr0 * 0.1, rel=1e-6), pytest.approx(lr0, rel=1e-6))
    assert config_changes(a.config, b.config) == [("sched.boundaries", [2], [3])]
    code, out, _ = command(["diff", str(runs["step_a"]), str(runs["step_b"])])
    assert code == 1
    assert "config: 1 key differs" in out and "sched.boundaries" in out
    assert "history: first differs at epoch 3 (epochs 1-2 bitwise equal" in out
    config_lines = out.split("config:")[1].split("\n\n")[0].splitlines()[1:]
    assert [line.split()[0] for line in config_lines] == ["sched.boundaries"]  # only the key that differs


def test_config_lists_only_the_keys_that_differ(runs: dict[str, Path]) -> None:
    from dltrain.tools.run_diff import config_changes, load_record

    a, c = load_record(runs["same1"]), load_record(runs["step_a"])
    changed = {key for key, _, _ in config_changes(a.config, c.config)}
    assert changed == {key for key in {*a.config, *c.config} if a.config.get(key, "?") != c.config.get(key, "?")}
    assert "sched.name" in changed and "optim.lr" not in changed and "trainer.seed" not in changed


def test_bad_input_is_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    good = runs["same1"]
    damaged = tmp_path / "damaged"
    shutil.copytree(good, damaged)
    (damaged / "metrics.json").write_text("{")
    no_events = tmp_path / "no_events"
    no_events.mkdir()
    shutil.copy(good / "config.yaml", no_events / "config.yaml")
    cases = {tmp_path / "missing": "is not a run folder", tmp_path: "has no config.yaml",
             damaged: "is damaged", no_events: "no TensorBoard event file"}
    for folder, words in cases.items():
        code, out, err = command(["diff", str(good), str(folder)])
        assert code == 2, (folder, out, err)
        assert err.count("\n") == 1 and err.startswith("dltrain: error: ") and words in err, err
        assert out == ""


def test_first_difference_is_bitwise_and_counts_a_missing_epoch() -> None:
    """Equal means the same float32 bits: a NaN equals itself, 0.0 differs from -0.0, a value one float32 ulp
    away differs; an epoch one run lacks is a difference; wall-clock tags are not compared."""
    import numpy as np

    from dltrain.tools.run_diff import RunRecord, first_difference

    def record(history: dict[str, dict[int, float]]) -> RunRecord:
        return RunRecord(Path("x"), {}, {}, history)

    one = 0.1
    next_up = float(np.nextafter(np.float32(one), np.float32(1)))
    nan = float("nan")
    base = {"val/loss": {1: one, 2: nan, 3: 0.0}, "z_more/time/epoch_sec": {1: 1.0, 2: 2.0, 3: 3.0}}
    assert first_difference(record(base), record({**base, "z_more/time/epoch_sec": {1: 9.0}})) is None
    assert first_difference(record(base), record({"val/loss": {1: next_up, 2: nan, 3: 0.0}}))[0] == 1
    assert first_difference(record(base), record({"val/loss": {1: one, 2: nan, 3: -0.0}}))[0] == 3
    assert first_difference(record(base), record({"val/loss": {1: one, 2: nan}})) == (3, [("val/loss", 0.0, None)])
