"""Working with a finished run's checkpoint: test metrics with a confusion matrix, export for deployment
(TorchScript; ONNX when the onnx package is installed), and text generation from a language model.

A checkpoint holds its resolved config, so the model and data are rebuilt exactly as trained, and its
preprocessing description (dltrain/preprocess.py): eval scales the rebuilt data by the saved statistics, and the
export takes raw inputs (the scaling is inside it) with the non-tensor parts written beside it as JSON.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from dltrain.core import checkpoint
from dltrain.core.engine import evaluate
from dltrain.core.files import write_atomic, write_json_atomic
from dltrain.core.registry import ConfigError, check
from dltrain.run import plugins
from dltrain.run.assemble import RunComponents, build
from dltrain.run.config import RunConfig
from dltrain.tools import preprocess

T = TypeVar("T")


@dataclass
class Loaded:
    path: Path  # the checkpoint file
    parts: RunComponents  # model (with the checkpoint's weights), data, task, and the run's config
    preprocessing: dict[str, Any] | None = None  # the checkpoint's description; None for an older checkpoint


def open_checkpoint(where: str | Path, prefer_best: bool = True) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A run directory's best.pt (else last.pt) or a checkpoint file: its path, content and embedded config."""
    where = Path(where).expanduser()
    if where.is_dir() and prefer_best and (where / "best.pt").is_file():
        where = where / "best.pt"
    path = checkpoint.checkpoint_file(where)
    saved = checkpoint.load(path)
    return path, saved, checkpoint.validate(saved, path)  # a damaged file is one line here, not a traceback below


def load_run(where: str | Path, prefer_best: bool = True, project: Path | None = None,
             data: Sequence[str] = ()) -> Loaded:
    """A run directory (its best.pt, else last.pt) or a checkpoint file, rebuilt on the CPU. A run of a user's
    project needs that project's plugins: they are imported from `project` (the working directory's, or the
    one the user names), never from the list the checkpoint's config holds. `data` (KEY=VALUE, `dltrain eval
    --data`) replaces data options of the run's config: the same kind of data from other files, scaled by the
    run's saved statistics; other classes than the run's are refused."""
    path, saved, cfg = open_checkpoint(where, prefer_best)
    description = saved.get("preprocessing")
    if data:
        check(description is not None, f"{path} holds no preprocessing description (trained by an older dltrain, "
              "or by a data builder that sets no DataBundle.preprocessing), so --data cannot check that the other "
              "data has the run's classes; evaluate it without --data")
        cfg = with_data(cfg, data)
    parts = with_config(cfg, saved, path, project, build, given=data)
    if description is not None:  # before the weights: other classes are a data problem, not a damaged file
        description = preprocess.check_description(description, path)
        if data:
            same_classes(parts.data, description, data)
        preprocess.conform(parts.data, description, path, warn=not data)
    weights = checkpoint.served_weights(saved)  # the EMA's averaged weights when the run kept them
    checkpoint.check_weights_fit(parts.model, weights, f"{path} does not fit the model its own config builds",
                                 "the file is damaged or was edited: use another checkpoint of the run")
    parts.model.load_state_dict(weights)
    parts.model.eval()
    return Loaded(path, parts, description)


def with_data(cfg: dict[str, Any], data: Sequence[str]) -> dict[str, Any]:
    """The run's config with `data` (each KEY=VALUE, `data.` optional, values in Hydra's override grammar)
    replacing options of its data choice; `name` (another kind of data) is not one of them."""
    from dltrain.core.registry import first_line
    from dltrain.data import DATASETS
    from dltrain.run.overrides import override_value

    node = dict(cfg.get("data") or {}) if isinstance(cfg.get("data"), dict) else {}
    name = node.get("name")
    keys = (set(node) | set(DATASETS.config_keys(name) if name in DATASETS.names() else ())) - {"name"}
    example = "e.g. --data test_root=holdout/ (data=image_folder) or --data test_path=new.csv (data=csv)"
    for given in data:
        key = given.split("=", 1)[0].strip().removeprefix("data.")
        check("=" in given and key in keys, f"--data {given}: give KEY=VALUE with KEY an option of the run's "
              f"data={name} ({', '.join(sorted(keys))}), {example}")
        try:
            node[key] = override_value(f"data.{key}={given.split('=', 1)[1]}")
        except Exception as err:  # noqa: BLE001  (Hydra's grammar errors)
            raise ConfigError(f"--data {given}: cannot read the value ({first_line(err, 160)}); quote a value "
                              "with special characters, e.g. test_root=\"my photos/\"") from None
    return {**cfg, "data": node}


def same_classes(data: Any, saved: dict[str, Any], given: Sequence[str]) -> None:
    """The data named by --data must have the run's classes (or targets of the run's size), in the run's order."""
    def classes(names: list[str] | None, count: int) -> str:
        return ", ".join(names) if names else f"{count} output(s)"

    now, then = classes(data.class_names, data.num_outputs), classes(saved.get("class_names"), saved["num_outputs"])
    check(now == then, f"--data {' '.join(given)}: its classes ({now}) are not the run's ({then}); evaluate on "
          "data with the run's classes")


def with_config(cfg: dict[str, Any], saved: dict[str, Any], path: Path, project: Path | None,
                make: Callable[[RunConfig], T], given: Sequence[str] = ()) -> T:
    """`make(the checkpoint's RunConfig)` with the project's plugins imported; its errors name the checkpoint,
    or the data options the user `given` (`eval --data`), which are then the likely cause."""
    plugins.load(plugins.project_plugins(project), project)
    try:
        return make(RunConfig.parse(cfg, trained=True))  # no optimizer built: nothing here steps it
    except ConfigError as err:
        if given:
            raise ConfigError(f"{err.problems[0]} (with --data {' '.join(given)})") from None
        trained = (saved.get("provenance") or {}).get("project") if isinstance(saved.get("provenance"), dict) else None
        if not (isinstance(cfg, dict) and cfg.get("plugins")) or project is not None and str(project) == trained:
            more = f" (and {len(err.problems) - 1} more)" if len(err.problems) > 1 else ""
            raise ConfigError(f"{path}: its embedded config does not parse: {err.problems[0]}{more}") from None
        raise ConfigError(f"{err.problems[0]} (this run used its project's plugins {cfg['plugins']}; run this "
                          f"command in its project folder {trained or ''} or name it with --project DIR)") from None


def confusion_matrix(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int,
                     batch_size: int = 512) -> torch.Tensor:
    """counts[i, j] = test samples of class i predicted as j."""
    counts = torch.zeros(classes, classes, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            pred = model(x[start:start + batch_size]).argmax(dim=1)
            counts += torch.bincount(y[start:start + batch_size] * classes + pred,
                                     minlength=classes * classes).reshape(classes, classes)
    return counts


def matrix_image(counts: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """A (3, H, W) heat map of row-normalized counts for TensorBoard: white = 0, dark blue = the whole row."""
    share = counts.float() / counts.sum(dim=1, keepdim=True).clamp_min(1)
    big = share.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    return torch.stack([1 - big, 1 - 0.7 * big, 1 - 0.3 * big]).clamp(0, 1)


def evaluate_run(loaded: Loaded, log_dir: Path | None = None) -> dict[str, Any]:
    """Test metrics; for classification also per-class accuracy and the confusion matrix (also logged to
    TensorBoard as an image under `log_dir`)."""
    parts = loaded.parts
    test = parts.data.test
    result: dict[str, Any] = evaluate(parts.model, parts.task, test, parts.config.data.batch_size, "test")
    result.update(parts.task.derived(result))
    if parts.task_name == "classification" and test.y.dim() == 1 and parts.data.num_outputs > 1:
        counts = confusion_matrix(parts.model, test.x, test.y, parts.data.num_outputs)
        result["per_class_acc"] = (counts.diag().float() / counts.sum(dim=1).clamp_min(1)).tolist()
        result["confusion_matrix"] = counts.tolist()
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            from dltrain.core.tags import board_tag

            with SummaryWriter(log_dir=str(log_dir)) as writer:
                writer.add_image(board_tag("test/confusion_matrix"), matrix_image(counts), 0)
    return result


ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch's ONNX exporter imports


def onnx_missing() -> list[str]:
    """The packages torch.onnx.export needs that are not installed (export skips ONNX without them)."""
    import importlib.util

    return [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]


def export(loaded: Loaded, out_dir: Path) -> dict[str, Path]:
    """TorchScript (always) and ONNX (when `onnx` is importable) traced on one test-shaped sample. With the run's
    preprocessing description the model takes raw inputs (preprocess.Deployed) and model.preprocessing.json
    beside it says their format, column order, categories, vocabulary and class names."""
    model, example = loaded.parts.model, loaded.parts.data.train.x[:2]
    check(not loaded.parts.traits.generative, f"model={loaded.parts.config.model.name} is generative (its forward trains "
          "it against a discriminator); export takes models that map inputs to outputs")
    desc = loaded.preprocessing
    if desc is not None:
        model = preprocess.deployed(model, desc)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {"torchscript": out_dir / "model.ts"}
        traced = torch.jit.trace(model, example)
        write_atomic(written["torchscript"], lambda handle: torch.jit.save(traced, handle))
        if desc is not None:
            written["preprocessing"] = out_dir / "model.preprocessing.json"
            info = {**preprocess.formats(desc, loaded.parts.task_name), **desc}
            write_json_atomic(written["preprocessing"], info)
    except OSError as err:
        raise ConfigError(f"cannot write the export to {out_dir}: {err.strerror or err}; give --out a writable "
                          "folder") from None
    if onnx_missing():
        return written
    written["onnx"] = out_dir / "model.onnx"
    batch = ({0: torch.export.Dim.AUTO},)  # any batch size
    partial = out_dir / ".model.onnx.tmp"  # renamed when complete: a reader never sees half a model
    torch.onnx.export(model, (example,), str(partial), input_names=["input"], output_names=["output"],
                      dynamic_shapes=batch, dynamo=True)
    os.replace(partial, written["onnx"])
    return written


def generate(loaded: Loaded, prompt: str, length: int, temperature: float, seed: int = 0) -> str:
    """Sample `length` characters after `prompt` from a character-level language model."""
    vocab: list[str] = loaded.parts.data.vocab or []
    check(bool(vocab) and loaded.parts.data.task == "language_model",
          f"{loaded.path} is not a language model run (data=text); generate needs one")
    check(temperature > 0, f"--temperature={temperature} must be > 0")
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted({ch for ch in prompt if ch not in index})
    check(not unknown, f"the prompt has characters the model never saw: {''.join(unknown)!r}")
    tokens = [index[ch] for ch in prompt] or [0]
    window = loaded.parts.data.train.x.shape[1]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(length):
            context = torch.tensor(tokens[-window:]).unsqueeze(0)
            logits = loaded.parts.model(context)[0, -1].float() / temperature
            tokens.append(int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)))
    return "".join(vocab[t] for t in tokens)


def describe(result: dict[str, Any]) -> str:
    lines = [f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)]
    if "per_class_acc" in result:
        lines.append("per-class accuracy: " + "  ".join(f"{i}:{a:.3f}" for i, a in enumerate(result["per_class_acc"])))
        lines.append("confusion matrix (rows: true class, columns: predicted):")
        lines += ["  " + " ".join(f"{c:5d}" for c in row) for row in result["confusion_matrix"]]
    return "\n".join(lines)
