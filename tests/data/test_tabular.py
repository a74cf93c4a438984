"""data=csv warns, once, about what trains but cannot mean what the user meant: an integer column that differs in
every row (an id, which the model can only memorise) and val/test categories the train split lacks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import cli

QUICK = ["trainer.max_epochs=2", "trainer.log_every_n_steps=0", "model.hidden=[8]"]


def write_rows(path: Path, n: int, seed: int, colors: tuple[str, ...] = ("red", "green", "blue")) -> Path:
    """Columns id (1..n, an integer key), a (a number), size (small integers), color (text), label."""
    rng = np.random.default_rng(seed)
    a, size, color = rng.normal(size=n), rng.integers(1, 5, n), rng.choice(colors, n)
    label = np.where(a + (color == "red") > 0.5, "yes", "no")
    lines = ["id,a,size,color,label", *(f"{i + 1},{a[i]:.4f},{size[i]},{color[i]},{label[i]}" for i in range(n))]
    path.write_text("\n".join(lines) + "\n")
    return path


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dltrain: warning:")]


def test_an_integer_id_used_as_a_feature_is_one_warning(tmp_path) -> None:
    write_rows(tmp_path / "t.csv", 200, 0)
    result = cli(["data=csv", "data.path=t.csv", "data.target=label", *QUICK, "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert warnings_of(result.stderr) == [
        "dltrain: warning: data=csv: column 'id' holds a different integer in each of its 200 rows, like an id; as "
        "a feature the model can only memorise it: list it in data.drop"]  # not `size`: its integers repeat
    dropped = cli(["data=csv", "data.path=t.csv", "data.target=label", "data.drop=[id]", *QUICK,
                   "hydra.run.dir=dropped"], cwd=tmp_path)
    assert dropped.returncode == 0 and warnings_of(dropped.stderr) == [], dropped.stderr


def test_a_test_file_category_the_train_split_lacks_is_one_warning(tmp_path) -> None:
    write_rows(tmp_path / "train.csv", 120, 0)
    write_rows(tmp_path / "test.csv", 30, 1, colors=("red", "purple"))
    result = cli(["data=csv", "data.path=train.csv", "data.test_path=test.csv", "data.target=label",
                  "data.drop=[id]", *QUICK, "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert warnings_of(result.stderr) == [
        "dltrain: warning: data=csv: column 'color' has value(s) in val/test that the train split lacks "
        "('purple'); they encode as none of its categories (all zeros)"]
