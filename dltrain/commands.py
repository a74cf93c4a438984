"""Named sub-commands of `dltrain` (typer). Training itself is `dltrain [OVERRIDES...]`, handled by Hydra."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import typer

from dltrain.conf_dirs import groups


def help_text() -> str:
    """The top-level help; '\\b' keeps click from re-wrapping a paragraph."""
    usage = ["\b", "Train: dltrain [GROUP=CHOICE | KEY=VALUE ...]    e.g. dltrain model=cnn optim=adam optim.lr=0.01",
             "Sweep: dltrain -m optim=sgd,adam sched=step,exponential",
             "Show the composed config: dltrain --cfg job [OVERRIDES]    Hydra's own flags: dltrain --hydra-help"]
    listing = ["\b", "Config groups and their choices:"]
    listing += [f"  {name:15s} {', '.join(choices) or '-'}" for name, choices in groups().items()]
    return "\n\n".join(["dltrain: config-driven deep-learning runs.", "\n".join(usage), "\n".join(listing)])


app = typer.Typer(help=help_text(), add_completion=False, no_args_is_help=True, rich_markup_mode=None)


def newest_run_root() -> Path:
    """The newest run or sweep folder under ./multirun or ./outputs that holds results."""
    candidates = [p for base in ("multirun", "outputs") for p in Path(base).glob("*/*")
                  if p.is_dir() and next(p.rglob("metrics.json"), None)]
    if not candidates:
        raise typer.BadParameter("no runs under ./outputs or ./multirun; pass a directory")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def existing(directory: Path | None) -> Path | None:
    """The directory a user named, which must exist."""
    if directory is not None and not directory.is_dir():
        typer.echo(f"dltrain: error: {directory} is not a directory; give a run or sweep directory", err=True)
        raise typer.Exit(2)
    return directory


def load_reports(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    reports = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            report = json.loads(path.read_text())
            reports.append((path.parent, report if isinstance(report, dict) else {"status": "unreadable"}))
        except (OSError, json.JSONDecodeError):
            reports.append((path.parent, {"status": "unreadable"}))
    return reports


def sort_key(report: dict[str, Any]) -> float:
    best = report.get("best")
    if not isinstance(best, (int, float)) or not math.isfinite(best):
        return math.inf
    return best if report.get("mode", "min") == "min" else -best


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("-" if value is None else str(value))


@app.command()
def runs(directory: Path = typer.Argument(None, help="run or sweep directory (default: the newest)")) -> None:
    """A table of the runs under DIRECTORY, best monitored metric first."""
    root = existing(directory) or newest_run_root()
    reports = load_reports(root)
    if not reports:
        typer.echo(f"dltrain: error: no metrics.json under {root}; give a run or sweep directory", err=True)
        raise typer.Exit(2)
    reports.sort(key=lambda item: sort_key(item[1]))
    metrics = sorted({k for _, r in reports for k in r.get("final", {}) if k.startswith(("train/loss", "val/"))})
    tests = sorted({k for _, r in reports for k in r.get("test", {})})
    header = ["run", "status", "best", "best_ep", *metrics, *tests, "epochs", "wall_s", "stopped"]
    rows = [header]
    for run_dir, r in reports:
        final, test = r.get("final", {}), r.get("test", {})
        name = ",".join(r.get("overrides") or []) or (str(run_dir.relative_to(root)) if run_dir != root else root.name)
        rows.append([name, r.get("status", "?"), fmt(r.get("best")), fmt(r.get("best_epoch")),
                     *(fmt(final.get(k)) for k in metrics), *(fmt(test.get(k)) for k in tests),
                     fmt(r.get("epochs")), fmt(r.get("train_seconds")), r.get("stop_reason") or r.get("error", "")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    typer.echo(f"runs under {root} (best = {reports[0][1].get('monitor', 'monitored metric')})")
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


@app.command()
def board(directory: Path = typer.Argument(None, help="run or sweep directory (default: the newest)"),
          port: int = typer.Option(6006, min=1, max=65535, help="port to serve on")) -> None:
    """Start TensorBoard on a run or sweep directory (each job shows as a run named by its overrides)."""
    root = existing(directory) or newest_run_root()
    typer.echo(f"TensorBoard on {root} at http://localhost:{port}")
    sys.stdout.flush()
    # exec, not a child process: a signal that stops `dltrain board` then stops TensorBoard, which is this process
    os.execv(sys.executable, [sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--port", str(port)])


def user_errors(action):  # noqa: ANN001, ANN201
    """Run `action`; a ConfigError becomes one line and exit code 2, like training's errors."""
    from dltrain.registry import ConfigError

    try:
        return action()
    except ConfigError as err:
        typer.echo(f"dltrain: error: {err}", err=True)
        raise typer.Exit(2) from None


@app.command("eval")
def eval_command(run: Path = typer.Argument(..., help="run directory (uses best.pt, else last.pt) or checkpoint"),
                 last: bool = typer.Option(False, "--last", help="use last.pt even when best.pt exists")) -> None:
    """Test metrics of a checkpoint; classification adds per-class accuracy and a confusion matrix
    (also written to TensorBoard in the run directory as the image test/confusion_matrix)."""
    from dltrain.evaluation import describe, evaluate_run, load_run

    loaded = user_errors(lambda: load_run(run, prefer_best=not last))
    typer.echo(f"{loaded.path}:")
    typer.echo(describe(evaluate_run(loaded, log_dir=loaded.path.parent)))


@app.command("export")
def export_command(run: Path = typer.Argument(..., help="run directory or checkpoint"),
                   out: Path = typer.Option(None, help="output folder (default: RUN/export)")) -> None:
    """Write the model as TorchScript (model.ts) and, when the onnx package is installed, ONNX (model.onnx)."""
    from dltrain.evaluation import export, load_run

    loaded = user_errors(lambda: load_run(run))
    for kind, path in user_errors(lambda: export(loaded, out or loaded.path.parent / "export")).items():
        typer.echo(f"{kind}: {path}")


@app.command("generate")
def generate_command(run: Path = typer.Argument(..., help="run directory or checkpoint of a data=text run"),
                     prompt: str = typer.Option("", help="text to continue"),
                     length: int = typer.Option(200, min=1, help="characters to sample"),
                     temperature: float = typer.Option(0.8, help="softmax temperature (> 0; lower is greedier)"),
                     seed: int = typer.Option(0, help="sampling seed")) -> None:
    """Sample text from a character-level language model checkpoint."""
    from dltrain.evaluation import generate, load_run

    loaded = user_errors(lambda: load_run(run))
    typer.echo(user_errors(lambda: generate(loaded, prompt, length, temperature, seed)))
