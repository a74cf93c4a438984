"""Named sub-commands of `dltrain` (typer). Training itself is `dltrain [OVERRIDES...]`, handled by Hydra."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from dltrain.cli.completion import CommandsAndOverrides, override_choices, use_line_completion_for_bash
from dltrain.core.conf_dirs import groups
from dltrain.sweep.runs_table import runs_table, terminal_width
from dltrain.sweep.seeds_table import seeds_table


def help_text() -> str:
    """The top-level help; '\\b' keeps click from re-wrapping a paragraph."""
    usage = ["\b", "Train: dltrain [GROUP=CHOICE | KEY=VALUE ...]    e.g. dltrain model=cnn optim=adam optim.lr=0.01",
             "Sweep: dltrain -m optim=sgd,adam sched=step,exponential",
             "Plan, without training: dltrain plan model=cnn    dltrain plan -m optim.lr=0.01,0.1",
             "Find a learning rate (16 rates as one stack): dltrain lr-find model=cnn optim=adam",
             "Show the composed config: dltrain --cfg job [OVERRIDES]    Hydra's own flags: dltrain --hydra-help"]
    listing = ["\b", "Config groups and their choices:"]
    from dltrain.run.plugins import is_builtin_conf, project_conf, project_root

    project = project_conf(project_root(sys.argv[1:]))
    listing += [f"  {name:15s} {', '.join(choices) or '-'}" for name, choices in groups(project).items()
                if name != "project"]
    if project is not None:
        listing.append(f"  (with the project's own choices from {project})")
    elif is_builtin_conf(Path("conf")):  # in dltrain's own clone: its conf/ is what is listed, not a project
        listing.append(f"  (dltrain's own configs, from {Path('conf').resolve()}; a project of your own: "
                       "dltrain init DIR)")
    return "\n\n".join(["dltrain: config-driven deep-learning runs.", "\n".join(usage), "\n".join(listing)])


class PlainArguments(typer.core.TyperCommand):
    """A sub-command's help that names its arguments as a user writes them (`RUN FILE...`), where typer shows
    `{run} {FILE...}...` and `FILE... <list[Path]>`: each argument's own help says what it takes."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [argument_name(p) if p.required else f"[{argument_name(p)}]" for p in self.get_params(ctx)
                         if p.param_type_name == "argument"]

    def format_options(self, ctx: typer.Context, formatter) -> None:  # noqa: ANN001
        params = self.get_params(ctx)
        arguments = [(argument_name(p), f"{p.help or ''}{'  [required]' if p.required else ''}") for p in params
                     if p.param_type_name == "argument"]
        options = [p.get_help_record(ctx) for p in params if p.param_type_name == "option"]
        for title, rows in (("Arguments", arguments), ("Options", [row for row in options if row])):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def argument_name(param) -> str:  # noqa: ANN001
    """RUN, DIRECTORY, FILE...: the argument's metavar (else its name in capitals), with '...' when it takes many."""
    name = param.metavar or param.name.upper()
    return f"{name}..." if param.nargs == -1 else name


use_line_completion_for_bash()
app = typer.Typer(help=help_text(), no_args_is_help=True, rich_markup_mode=None, cls=CommandsAndOverrides)


def existing(directory: Path | None) -> Path | None:
    """The directory a user named, which must exist."""
    if directory is not None and not directory.is_dir():
        from dltrain.core.files import looked_in

        typer.echo(f"dltrain: error: {directory} is not a directory{looked_in(directory)}; give a run or sweep "
                   "directory", err=True)
        raise typer.Exit(2)
    return directory


RUN_HELP = "run directory (uses best.pt, else last.pt) or checkpoint"
PICKED = ("without one: the newest sweep under ./multirun, else the newest run under ./outputs (newest: its "
          "metrics.json or TensorBoard files written last); a newer single run is named in a line")


def picked(directory: Path | None, command: str) -> tuple[Path, str]:
    """The folder the user named, or the one the rule in PICKED finds, and a note for the user ('' if none)."""
    from dltrain.tools.board import default_folder

    return (directory, "") if existing(directory) else default_folder(command)


@app.command(cls=PlainArguments)
def runs(directory: Path = typer.Argument(None, metavar="DIRECTORY", help=f"run or sweep directory; {PICKED}")) -> None:
    """A table of the runs under DIRECTORY, best monitored metric first (marked *), as wide as the terminal; below
    it, where runs differ in trainer.seed, each configuration's mean ± std over its seeds."""
    root, note = picked(directory, "runs")
    lines = runs_table(root, terminal_width()) + seeds_table(root, terminal_width())
    if not lines:
        typer.echo(f"dltrain: error: no metrics.json under {root}; give a run or sweep directory", err=True)
        raise typer.Exit(2)
    typer.echo("\n".join(lines))
    if note:
        typer.echo(f"({note})")


@app.command(cls=PlainArguments)
def board(directory: Path = typer.Argument(None, metavar="DIRECTORY", help=f"run or sweep directory; {PICKED}"),
          port: int = typer.Option(None, min=1, max=65535, show_default=False, metavar="PORT",
                                   help="port to serve on [default: 6006, else the next free one]"),
          bind_all: bool = typer.Option(False, "--bind_all", "--bind-all",
                                        help="serve on every network interface, for a browser on another machine "
                                             "(default: this machine only)")) -> None:
    """TensorBoard on a run or sweep directory: each job of a sweep is a run named by its swept values; it opens
    on the train/ and val/ curves of all of them, and the HParams tab compares them. One line says the URL."""
    from dltrain.tools.board import serve

    root, note = picked(directory, "board")
    serve(root, port, bind_all, f" ({note})" if note else "")


def user_errors(action):  # noqa: ANN001, ANN201
    """Run `action`; a ConfigError becomes one line and exit code 2, like training's errors."""
    from dltrain.core.registry import ConfigError

    try:
        return action()
    except ConfigError as err:
        typer.echo(f"dltrain: error: {err}", err=True)
        raise typer.Exit(2) from None


@app.command("diff", cls=PlainArguments)
def diff_command(run_a: Path = typer.Argument(..., metavar="RUN_A", help="a run's folder (or a checkpoint in it)"),
                 run_b: Path = typer.Argument(..., metavar="RUN_B", help="the run to compare it with")) -> None:
    """What differs between two runs: the config keys that differ (only those), git commits and versions, the
    metrics side by side, and the first epoch at which their per-epoch TensorBoard values differ, compared bitwise
    (or "identical"). Exit status as diff(1): 0 same config and identical histories, 1 they differ, 2 bad input."""
    from dltrain.tools.run_diff import diff_runs

    lines, same = user_errors(lambda: diff_runs(run_a, run_b))
    typer.echo("\n".join(lines))
    raise typer.Exit(0 if same else 1)


@app.command("init", cls=PlainArguments)
def init_command(directory: Path = typer.Argument(..., metavar="DIRECTORY", help="new folder for the project")) -> None:
    """Write a starter project: your own model and data (Python), their YAMLs, a sweep, a README."""
    from dltrain.tools.scaffold import init_project

    written = user_errors(lambda: init_project(directory))
    typer.echo(f"wrote {len(written)} files to {directory}:")
    for path in written:
        typer.echo(f"  {path.relative_to(directory)}")
    typer.echo(f"next: cd {directory} && dltrain")


DATA_HELP = ("evaluate on other data of the run's kind: KEY=VALUE replaces the run's data option KEY, e.g. "
             "--data test_root=holdout/ (image_folder) or --data test_path=new.csv (csv); repeatable; the run's "
             "scaling is used, other classes are refused")
PROJECT_HELP = "your project folder (its conf/ and plugins) when the run used your own components; default: here"


def project_of(project: Path | None) -> Path | None:
    """The named project folder, else the working directory's when it is one."""
    from dltrain.run.plugins import project_root

    return project.expanduser().resolve() if project else project_root([])


@app.command("eval", cls=PlainArguments)
def eval_command(run: Path = typer.Argument(..., metavar="RUN", help=RUN_HELP),
                 last: bool = typer.Option(False, "--last", help="use last.pt even when best.pt exists"),
                 predictions: Path = typer.Option(None, help="also write each test sample's prediction to this CSV"),
                 data: list[str] = typer.Option(None, "--data", metavar="KEY=VALUE", help=DATA_HELP),
                 project: Path = typer.Option(None, help=PROJECT_HELP)) -> None:
    """Test metrics of a checkpoint; classification adds per-class accuracy and a confusion matrix
    (also written to TensorBoard in the run directory as the image z_more/test/confusion_matrix, except for
    other data given with --data)."""
    from dltrain.tools.evaluation import describe, evaluate_run, load_run

    data = data or []
    loaded = user_errors(lambda: load_run(run, prefer_best=not last, project=project_of(project), data=data))
    other = f" on --data {' '.join(data)} ({len(loaded.parts.data.test)} test samples)" if data else ""
    typer.echo(f"{loaded.path}{other}:")
    typer.echo(describe(evaluate_run(loaded, log_dir=None if data else loaded.path.parent)))
    if predictions is not None:
        from dltrain.tools.predict import split_predictions, write_csv

        user_errors(lambda: write_csv(predictions, *split_predictions(loaded)))
        typer.echo(f"predictions: wrote {predictions}")


@app.command("predict", cls=PlainArguments)
def predict_command(run: Path = typer.Argument(..., metavar="RUN", help=RUN_HELP),
                    files: list[Path] = typer.Argument(..., metavar="FILE", help="CSV files (one prediction per "
                                                       "row), images, text files or .npy/.npz, as the run's data was"),
                    out: Path = typer.Option(None, help="write the predictions to this CSV instead of printing"),
                    last: bool = typer.Option(False, "--last", help="use last.pt even when best.pt exists"),
                    unseen_category: str = typer.Option("error", help="a CSV category the run never trained on: "
                                                        "error (refuse the file), or zeros (encode it as none of "
                                                        "the run's categories, with a warning)"),
                    project: Path = typer.Option(None, help=PROJECT_HELP)) -> None:
    """Predict raw inputs with a run's model: the preprocessing it learned (scaling, categories, vocabulary,
    image size, class names) comes from its checkpoint. One line per input: class and probability, or value."""
    from dltrain.tools.predict import load_predictor, predict_files, table_text, write_csv

    predictor = user_errors(lambda: load_predictor(run, project_of(project), prefer_best=not last))
    header, rows = user_errors(lambda: predict_files(predictor, files, unseen_category))
    if out is None:
        typer.echo(table_text(header, rows))
    else:
        user_errors(lambda: write_csv(out, header, rows))
        typer.echo(f"{len(rows)} prediction(s) from {predictor.path}: wrote {out}")


@app.command("export", cls=PlainArguments)
def export_command(run: Path = typer.Argument(..., metavar="RUN", help="run directory or checkpoint"),
                   out: Path = typer.Option(None, help="output folder (default: RUN/export)"),
                   project: Path = typer.Option(None, help=PROJECT_HELP)) -> None:
    """Write the model as TorchScript (model.ts) and, when the onnx package is installed, ONNX (model.onnx)."""
    from dltrain.tools.evaluation import export, load_run

    loaded = user_errors(lambda: load_run(run, project=project_of(project)))
    written = user_errors(lambda: export(loaded, out or loaded.path.parent / "export"))
    for kind, path in written.items():
        typer.echo(f"{kind}: wrote {path}")
    if "preprocessing" not in written:  # a checkpoint of an older dltrain, or of a builder that records none
        typer.echo("note: the checkpoint holds no preprocessing description: the model takes inputs scaled as in "
                   "training, not raw ones")
    if "onnx" not in written:  # export() writes ONNX only when torch's exporter has its packages
        from dltrain.tools.evaluation import onnx_missing

        typer.echo(f"onnx: skipped: model.onnx needs {' and '.join(onnx_missing())} (pip install "
                   f"{' '.join(onnx_missing())})")


@app.command("generate", cls=PlainArguments)
def generate_command(run: Path = typer.Argument(..., metavar="RUN",
                                                help="run directory or checkpoint of a data=text run"),
                     prompt: str = typer.Option("", help="text to continue"),
                     length: int = typer.Option(200, min=1, help="characters to sample"),
                     temperature: float = typer.Option(0.8, help="softmax temperature (> 0; lower is greedier)"),
                     seed: int = typer.Option(0, help="sampling seed"),
                     project: Path = typer.Option(None, help=PROJECT_HELP)) -> None:
    """Sample text from a character-level language model checkpoint."""
    from dltrain.tools.evaluation import generate, load_run

    loaded = user_errors(lambda: load_run(run, project=project_of(project)))
    text = user_errors(lambda: generate(loaded, prompt, length, temperature, seed))
    typer.echo(text if text.endswith("\n") else text + "\n", nl=False)  # the output ends with one newline


PLAN_HELP = ("overrides exactly as for a run (GROUP=CHOICE, KEY=VALUE), -m and comma lists for a sweep; none: the "
             "default run")


@app.command("plan", cls=PlainArguments,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def plan_command(overrides: list[str] = typer.Argument(None, metavar="OVERRIDES", help=PLAN_HELP,
                                                      autocompletion=override_choices)) -> None:
    """What `dltrain [-m] OVERRIDES` would do, without training it or writing a file: parameters and memory, steps
    per epoch and in all, the learning rate over the whole run, what early stopping watches, device, threads,
    precision, and an estimate of the time per epoch from a few timed steps. With -m: each job of the sweep, how a
    vectorised launcher would stack them, and the total."""
    # `dltrain plan ...` is run by cli/main.py (it reads the command line as a run does); typer gives its --help
    typer.echo("dltrain: error: run it as: dltrain plan [-m] OVERRIDES", err=True)
    raise typer.Exit(2)


@app.command("lr-find", cls=PlainArguments,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def lr_find_command(
    overrides: list[str] = typer.Argument(None, metavar="OVERRIDES", autocompletion=override_choices,
                                          help="the run to probe, as for dltrain OVERRIDES"),
    num: int = typer.Option(16, "--num", help="learning rates tried, log-spaced"),
    low: float = typer.Option(1e-5, "--min", help="the smallest rate"),
    high: float = typer.Option(1.0, "--max", help="the largest rate"),
    epochs: str = typer.Option("auto", "--epochs", help="epochs each rate trains, at a constant rate; auto: the "
                               "fewest with 300 optimizer steps, at most the run's max_epochs"),
) -> None:
    """A learning-rate range test: the run that `dltrain OVERRIDES` would start, trained at --num log-spaced rates
    from --min to --max side by side as one stack (one process), each held constant for --epochs; suggests the rate
    with the lowest validation loss, prints the curve and the command to run with it, and saves lr_find.png and
    lr_find.json under outputs/lr-find/. Runs whose model cannot be stacked (batch norm, RNNs, DDP, ...) are
    refused in one line."""
    # `dltrain lr-find ...` is run by cli/main.py (it reads the command line as a run does); typer gives its --help
    typer.echo("dltrain: error: run it as: dltrain lr-find [--num K] [--min LO] [--max HI] [--epochs E|auto] OVERRIDES",
               err=True)
    raise typer.Exit(2)
