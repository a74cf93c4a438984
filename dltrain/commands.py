"""Named sub-commands of `dltrain` (typer). Training itself is `dltrain [OVERRIDES...]`, handled by Hydra."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from dltrain.conf_dirs import groups
from dltrain.runs_table import runs_table, terminal_width


def help_text() -> str:
    """The top-level help; '\\b' keeps click from re-wrapping a paragraph."""
    usage = ["\b", "Train: dltrain [GROUP=CHOICE | KEY=VALUE ...]    e.g. dltrain model=cnn optim=adam optim.lr=0.01",
             "Sweep: dltrain -m optim=sgd,adam sched=step,exponential",
             "Show the composed config: dltrain --cfg job [OVERRIDES]    Hydra's own flags: dltrain --hydra-help"]
    listing = ["\b", "Config groups and their choices:"]
    from dltrain.plugins import project_conf, project_root

    project = project_conf(project_root(sys.argv[1:]))
    listing += [f"  {name:15s} {', '.join(choices) or '-'}" for name, choices in groups(project).items()
                if name != "project"]
    if project is not None:
        listing.append(f"  (with the project's own choices from {project})")
    return "\n\n".join(["dltrain: config-driven deep-learning runs.", "\n".join(usage), "\n".join(listing)])


class CommandsAndOverrides(typer.core.TyperGroup):
    """Shell completion (`dltrain --install-completion`) of sub-commands and their options, and of overrides: a
    config group's choices (`model=cnn`) at any position of a training command line."""

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> tuple:
        if ctx.resilient_parsing and args and "=" in args[0]:  # completing after an override: a training command
            return None, None, args[1:]
        return super().resolve_command(ctx, args)

    def shell_complete(self, ctx: typer.Context, incomplete: str) -> list:
        try:  # typer < 0.16 runs on click; later ones carry their own copy of it
            from click.shell_completion import CompletionItem
        except ImportError:
            from typer._click.shell_completion import CompletionItem

        from dltrain.plugins import project_conf, project_root

        choices = [f"{group}={choice}" for group, names in groups(project_conf(project_root([]))).items()
                   if group != "project" for choice in names]
        overrides = [CompletionItem(item) for item in choices if item.startswith(incomplete)]
        return overrides if ctx.args else super().shell_complete(ctx, incomplete) + overrides


app = typer.Typer(help=help_text(), no_args_is_help=True, rich_markup_mode=None, cls=CommandsAndOverrides)


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
        from dltrain.files import looked_in

        typer.echo(f"dltrain: error: {directory} is not a directory{looked_in(directory)}; give a run or sweep "
                   "directory", err=True)
        raise typer.Exit(2)
    return directory


@app.command()
def runs(directory: Path = typer.Argument(None, help="run or sweep directory (default: the newest)")) -> None:
    """A table of the runs under DIRECTORY, best monitored metric first (marked *), as wide as the terminal."""
    root = existing(directory) or newest_run_root()
    lines = runs_table(root, terminal_width())
    if not lines:
        typer.echo(f"dltrain: error: no metrics.json under {root}; give a run or sweep directory", err=True)
        raise typer.Exit(2)
    typer.echo("\n".join(lines))


@app.command()
def board(directory: Path = typer.Argument(None, help="run or sweep directory (default: the newest)"),
          port: int = typer.Option(6006, min=1, max=65535, help="port to serve on")) -> None:
    """Start TensorBoard on a run or sweep directory (each job shows as a run named by its swept values)."""
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


@app.command("init")
def init_command(directory: Path = typer.Argument(..., help="new folder for the project")) -> None:
    """Write a starter project: your own model and data (Python), their YAMLs, a sweep, a README."""
    from dltrain.scaffold import init_project

    written = user_errors(lambda: init_project(directory))
    typer.echo(f"wrote {len(written)} files to {directory}:")
    for path in written:
        typer.echo(f"  {path.relative_to(directory)}")
    typer.echo(f"next: cd {directory} && dltrain")


PROJECT_HELP = "your project folder (its conf/ and plugins) when the run used your own components; default: here"


def project_of(project: Path | None) -> Path | None:
    """The named project folder, else the working directory's when it is one."""
    from dltrain.plugins import project_root

    return project.expanduser().resolve() if project else project_root([])


@app.command("eval")
def eval_command(run: Path = typer.Argument(..., help="run directory (uses best.pt, else last.pt) or checkpoint"),
                 last: bool = typer.Option(False, "--last", help="use last.pt even when best.pt exists"),
                 predictions: Path = typer.Option(None, help="also write each test sample's prediction to this CSV"),
                 project: Path = typer.Option(None, help=PROJECT_HELP)) -> None:
    """Test metrics of a checkpoint; classification adds per-class accuracy and a confusion matrix
    (also written to TensorBoard in the run directory as the image test/confusion_matrix)."""
    from dltrain.evaluation import describe, evaluate_run, load_run

    loaded = user_errors(lambda: load_run(run, prefer_best=not last, project=project_of(project)))
    typer.echo(f"{loaded.path}:")
    typer.echo(describe(evaluate_run(loaded, log_dir=loaded.path.parent)))
    if predictions is not None:
        from dltrain.predict import split_predictions, write_csv

        user_errors(lambda: write_csv(predictions, *split_predictions(loaded)))
        typer.echo(f"predictions: wrote {predictions}")


@app.command("predict")
def predict_command(run: Path = typer.Argument(..., help="run directory (uses best.pt, else last.pt) or checkpoint"),
                    files: list[Path] = typer.Argument(..., metavar="FILE...", help="CSV files (one prediction per "
                                                       "row), images, text files or .npy/.npz, as the run's data was"),
                    out: Path = typer.Option(None, help="write the predictions to this CSV instead of printing"),
                    last: bool = typer.Option(False, "--last", help="use last.pt even when best.pt exists"),
                    project: Path = typer.Option(None, help=PROJECT_HELP)) -> None:
    """Predict raw inputs with a run's model: the preprocessing it learned (scaling, categories, vocabulary,
    image size, class names) comes from its checkpoint. One line per input: class and probability, or value."""
    from dltrain.predict import load_predictor, predict_files, table_text, write_csv

    predictor = user_errors(lambda: load_predictor(run, project_of(project), prefer_best=not last))
    header, rows = user_errors(lambda: predict_files(predictor, files))
    if out is None:
        typer.echo(table_text(header, rows))
    else:
        user_errors(lambda: write_csv(out, header, rows))
        typer.echo(f"{len(rows)} prediction(s) from {predictor.path}: wrote {out}")


@app.command("export")
def export_command(run: Path = typer.Argument(..., help="run directory or checkpoint"),
                   out: Path = typer.Option(None, help="output folder (default: RUN/export)"),
                   project: Path = typer.Option(None, help=PROJECT_HELP)) -> None:
    """Write the model as TorchScript (model.ts) and, when the onnx package is installed, ONNX (model.onnx)."""
    from dltrain.evaluation import export, load_run

    loaded = user_errors(lambda: load_run(run, project=project_of(project)))
    written = user_errors(lambda: export(loaded, out or loaded.path.parent / "export"))
    for kind, path in written.items():
        typer.echo(f"{kind}: wrote {path}")
    if "preprocessing" not in written:  # a checkpoint of an older dltrain, or of a builder that records none
        typer.echo("note: the checkpoint holds no preprocessing description: the model takes inputs scaled as in "
                   "training, not raw ones")
    if "onnx" not in written:  # export() writes ONNX only when the onnx extra is installed
        typer.echo("onnx: skipped (pip install -e '.[onnx]')")


@app.command("generate")
def generate_command(run: Path = typer.Argument(..., help="run directory or checkpoint of a data=text run"),
                     prompt: str = typer.Option("", help="text to continue"),
                     length: int = typer.Option(200, min=1, help="characters to sample"),
                     temperature: float = typer.Option(0.8, help="softmax temperature (> 0; lower is greedier)"),
                     seed: int = typer.Option(0, help="sampling seed"),
                     project: Path = typer.Option(None, help=PROJECT_HELP)) -> None:
    """Sample text from a character-level language model checkpoint."""
    from dltrain.evaluation import generate, load_run

    loaded = user_errors(lambda: load_run(run, project=project_of(project)))
    text = user_errors(lambda: generate(loaded, prompt, length, temperature, seed))
    typer.echo(text if text.endswith("\n") else text + "\n", nl=False)  # the output ends with one newline
