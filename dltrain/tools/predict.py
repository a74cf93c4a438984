"""`dltrain predict RUN FILE...`: a trained model on raw inputs (CSV rows, image files, text files, arrays).

The model is rebuilt from the checkpoint's config and its preprocessing description alone (the sample shape, the
class count and the vocabulary size are in it): the training data is never read again. The files become a raw
batch (preprocess.read_inputs) and go through the same `Deployed` wrapper that `dltrain export` traces, so a
prediction here and the exported model's on the same file agree. `split_predictions` gives `dltrain eval
--predictions` the same rows for the run's own test split.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltrain.core import checkpoint
from dltrain.core.files import write_text_atomic
from dltrain.core.registry import ConfigError, check
from dltrain.models import MODELS, model_traits
from dltrain.run.assemble import user_code
from dltrain.run.config import RunConfig
from dltrain.tools.evaluation import Loaded, open_checkpoint, with_config
from dltrain.tools.preprocess import check_description, deployed, read_inputs

TASKS = ("classification", "regression")  # what a prediction can be printed as
BATCH = 256  # samples per forward pass


@dataclass
class Predictor:
    path: Path  # the checkpoint file
    model: nn.Module  # the run's model behind its input scaling (preprocess.Deployed)
    desc: dict[str, Any]  # the checkpoint's preprocessing description
    task: str


def load_predictor(where: str | Path, project: Path | None = None, prefer_best: bool = True) -> Predictor:
    """A run directory (best.pt, else last.pt) or checkpoint file, as a model that takes raw inputs."""
    path, saved, cfg = open_checkpoint(where, prefer_best)
    desc = check_description(saved.get("preprocessing"), path)
    model, task = with_config(cfg, saved, path, project, lambda config: bare_model(config, desc))
    check(task in TASKS, f"{path} is a {task} run; predict takes classification and regression runs "
          "(a language model: dltrain generate)")
    weights = checkpoint.served_weights(saved)  # the EMA's averaged weights when the run kept them
    checkpoint.check_weights_fit(model, weights, f"{path} does not fit the model its own config builds",
                                 "the file is damaged or was edited: use another checkpoint of the run")
    model.load_state_dict(weights)
    return Predictor(path, deployed(model.eval(), desc), desc, task)


def bare_model(config: RunConfig, desc: dict[str, Any]) -> tuple[nn.Module, str]:
    """The config's model for the described inputs (no data built), and the run's task."""
    check(not model_traits(config.model.name).generative, f"model={config.model.name} is generative; predict takes "
          "models that map inputs to outputs")
    model = user_code(MODELS, config.model, nn.Module, in_shape=tuple(desc["shape"]), num_outputs=desc["num_outputs"],
                      **desc["model_args"])
    return model, config.task.name or desc["task"]


def outputs(model: nn.Module, x: Any) -> torch.Tensor:
    """model(x) in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + BATCH]).float() for i in range(0, len(x), BATCH)])


def rows_of(out: torch.Tensor, task: str, class_names: list[str] | None) -> tuple[list[str], list[list[str]]]:
    """Column names and one row per sample: the class (its name) and its probability, or the predicted values.
    The class is the logits' argmax, as eval's accuracy counts it (loss=bce: a positive logit is class 1)."""
    if task == "regression":
        header = ["prediction"] if out.shape[1] == 1 else [f"prediction_{k}" for k in range(out.shape[1])]
        return header, [[f"{v:.6g}" for v in row] for row in out.tolist()]
    if out.shape[1] == 1:  # one logit of class 1
        index = (out[:, 0] > 0).long()
        p1 = torch.sigmoid(out[:, 0])
        prob = torch.where(index == 1, p1, 1 - p1)
    else:
        index = out.argmax(dim=1)
        prob = torch.softmax(out, dim=1).gather(1, index[:, None])[:, 0]
    names = [class_names[i] if class_names and i < len(class_names) else str(i) for i in index.tolist()]
    return ["prediction", "probability"], [[n, f"{p:.4f}"] for n, p in zip(names, prob.tolist())]


def predict_files(predictor: Predictor, files: list[Path], unseen: str = "error") -> tuple[list[str], list[list[str]]]:
    """A header and one row per sample of the files: [input, prediction, probability] or [input, values...];
    `unseen`: what a CSV category the run never trained on does (preprocess.UNSEEN: error | zeros)."""
    check(bool(files), "give one or more files to predict")
    names, raw = read_inputs(predictor.desc, files, unseen)
    header, rows = rows_of(outputs(predictor.model, raw), predictor.task, predictor.desc.get("class_names"))
    return ["input", *header], [[name, *row] for name, row in zip(names, rows)]


def split_predictions(loaded: Loaded) -> tuple[list[str], list[list[str]]]:
    """`dltrain eval --predictions`: [index, target, prediction, ...] for each sample of the run's test split."""
    parts, desc = loaded.parts, loaded.preprocessing or {}
    task = parts.task_name
    check(task in TASKS, f"{loaded.path} is a {task} run; --predictions takes classification and regression runs")
    out, y = outputs(parts.model, parts.data.test.x), parts.data.test.y
    target = desc.get("target")
    if task == "regression" and target:  # back to the target's own units, as predict prints them
        mean, std = torch.tensor(target["mean"]), torch.tensor(target["std"])
        out, y = out * std + mean, y * std + mean
    header, rows = rows_of(out, task, parts.data.class_names)
    names = parts.data.class_names
    truth = ([names[i] if names else str(i) for i in y.tolist()] if task == "classification"
             else [" ".join(f"{v:.6g}" for v in row) for row in y.reshape(len(y), -1).tolist()])
    return ["index", "target", *header], [[str(i), t, *row] for i, (t, row) in enumerate(zip(truth, rows))]


def table_text(header: list[str], rows: list[list[str]]) -> str:
    """Aligned columns for the terminal, the header first."""
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows])


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """The rows as a CSV file (written atomically); an unwritable path is one line."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, *rows])
    try:
        write_text_atomic(path, text.getvalue())
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}; give --out a writable path") from None
