"""Starting a run from a trained one (fine-tuning): `trainer.init_from`, `trainer.init_mode`, `trainer.freeze` and
`trainer.lr_scales` (their meaning: conf/trainer/default.yaml; the guide's "Fine-tuning" section).

`init_from` names a run folder (its best.pt, else its last.pt) or a checkpoint file. Its weights, read with the safe
load (core/checkpoint.py: tensors only; the embedded config is YAML text, read with yaml.safe_load), go into a *new*
run: a fresh optimizer, schedule and run folder. `strict` (the default) loads every tensor or refuses; `partial`
loads the tensors whose names and shapes match and says in one line what was loaded, skipped and left fresh.
Where the weights came from (the file, its epoch, the source run's model, data, commit and metrics) goes into
metrics.json and every checkpoint, under `init_from`. A resumed run takes its weights from its own checkpoint: the
source is not opened again.

Parameter patterns (`freeze`, `lr_scales`) are fnmatch patterns over `model.named_parameters()` names, and a pattern
without wildcards also matches as a prefix of module names: `0` matches `0.weight` and `0.bias`, `body` matches
`body.3.conv.weight`. Frozen parameters get requires_grad=False and are not handed to the optimizer; a batch-norm
layer whose parameters are all frozen stays in eval mode while the run trains (its running statistics stay).
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from dltrain.core import checkpoint, dist, metrics_file
from dltrain.core.engine import NORM_LAYERS
from dltrain.core.optim import ParamGroup
from dltrain.core.registry import ConfigError, check
from dltrain.models import MODELS
from dltrain.run.config_types import TrainerConfig

SOURCE_FILES = ("best.pt", "last.pt")  # what a run folder gives, in order of preference
SHOWN = 4  # names shown per list in one line


@dataclass(frozen=True)
class Source:
    """A checkpoint to start from: its file, its weights, its embedded config and where it came from."""

    path: Path
    weights: dict[str, torch.Tensor]
    config: dict[str, Any]
    record: dict[str, Any]  # for metrics.json and checkpoints: the file, its epoch, the source run's provenance


def source_file(where: str) -> Path:
    """A checkpoint file, or a run folder's best.pt, else its last.pt."""
    path = Path(where).expanduser()
    if path.is_dir():
        found = [path / name for name in SOURCE_FILES if (path / name).is_file()]
        check(bool(found), f"trainer.init_from={where}: the folder holds neither best.pt nor last.pt; give a run "
              "folder of a trained run, or a checkpoint file")
        return found[0]
    check(path.is_file(), f"trainer.init_from={where}: no such file or folder; give a run folder (its best.pt, "
          "else last.pt is used) or a checkpoint file")
    return path


def open_source(where: str) -> Source:
    """The source's weights, checked entry by entry (a damaged file is one line), and its provenance."""
    path = source_file(where)
    try:
        saved = checkpoint.load(path)
        config = checkpoint.validate(saved, path)
    except ConfigError as err:
        raise ConfigError(f"trainer.init_from: {err.problems[0]}") from None
    return Source(path, saved["model"], config, provenance(path, saved, config))


def provenance(path: Path, saved: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What metrics.json and checkpoints record of the source: plain values only (a safe load reads them back)."""
    report = metrics_file.read(path.parent)
    chain = saved.get("init_from")
    return {
        "path": str(path.resolve()),
        "file": path.name,
        "epoch": saved["epoch"],
        "model": (config.get("model") or {}).get("name"),
        "data": (config.get("data") or {}).get("name"),
        "git_commit": saved.get("git_commit"),
        "provenance": saved.get("provenance"),
        "metrics": {key: report[key] for key in ("status", "monitor", "best", "best_epoch", "test") if key in report},
        "init_from": chain.get("path") if isinstance(chain, dict) else None,  # the source's own source, if any
    }


def check_at_door(trainer: TrainerConfig, model: str) -> None:
    """What the config and the source file decide (config.py's door, with the run's inputs): the source exists
    and is a readable dltrain checkpoint, and a generative model starts only from a generative one (and the
    reverse). A resume never opens the source: the run's weights come from its own checkpoint."""
    if not trainer.init_from or trainer.resume:
        return
    source = open_source(trainer.init_from)
    theirs = source.record["model"]
    if isinstance(theirs, str) and theirs in MODELS.names() and model in MODELS.names():
        generative = {name: bool(MODELS.traits(name).get("generative")) for name in (theirs, model)}
        check(generative[theirs] == generative[model] or theirs == model,
              f"trainer.init_from={trainer.init_from} holds a model={theirs} "
              f"({'generative' if generative[theirs] else 'not generative'}), which cannot start a model={model} "
              f"({'generative' if generative[model] else 'not generative'}); start from a run of a model of its kind")


def check_patterns(trainer: TrainerConfig) -> list[str]:
    """The door's checks of init_mode, freeze and lr_scales (their values; what they match needs the model)."""
    problems = []
    for pattern in trainer.freeze:
        if str(pattern).strip() == "":
            problems.append("trainer.freeze has an empty pattern; give parameter names or patterns, e.g. [0, '3.*']")
    for pattern, scale in (trainer.lr_scales or {}).items():
        number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
        if not isinstance(pattern, (str, int)) or str(pattern).strip() == "":
            problems.append(f"trainer.lr_scales: the pattern {pattern!r} must be a parameter name or pattern")
        elif not number or not math.isfinite(scale) or scale <= 0:
            problems.append(f"trainer.lr_scales.{pattern}={scale!r} must be a number > 0 (a factor of the "
                            "schedule's rate; to keep parameters fixed, use trainer.freeze)")
    if trainer.init_mode != "strict" and not trainer.init_from:
        problems.append(f"trainer.init_mode={trainer.init_mode} needs trainer.init_from (the run or checkpoint to "
                        "start from)")
    return problems


def matches(name: str, pattern: str) -> bool:
    """fnmatch over a parameter's name; a pattern without wildcards also matches a module prefix (`0` -> `0.bias`)."""
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(f"{pattern}.")


def unmatched(kind: str, patterns: Iterable[Any], names: list[str]) -> None:
    """A pattern that matches no parameter is a typo or a model of another shape: one line with some names."""
    missing = [str(p) for p in patterns if not any(matches(n, str(p)) for n in names)]
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    check(not missing, f"{kind}: {', '.join(repr(m) for m in missing)} matches no parameter of this model; "
          f"its parameters are: {shown} (a name, a module prefix such as 0, or an fnmatch pattern such as '3.*')")


def start(model: nn.Module, trainer: TrainerConfig) -> dict[str, Any]:
    """Before the optimizer is made: load the source's weights into a new run (a resume checks instead that it
    continues the run that started from this source), then freeze. Returns {"init_from": record} or {}, which
    assemble adds to the run's origin (metrics.json and every checkpoint)."""
    record: dict[str, Any] | None = None
    if trainer.init_from and trainer.resume:
        record = resumed_record(trainer)
    elif trainer.init_from:
        source = open_source(trainer.init_from)
        record = {**source.record, **load(model, source, trainer)}
    frozen = freeze(model, trainer.freeze)
    if record is not None and trainer.freeze:
        record["frozen"] = frozen
    return {"init_from": record} if record is not None else {}


def resumed_record(trainer: TrainerConfig) -> dict[str, Any] | None:
    """A resume continues a run: the checkpoint's run must have started from this same source (its weights come
    from its own checkpoint, not from the source again); its record of the source carries on."""
    saved = checkpoint.load(trainer.resume)
    theirs = ((yaml.safe_load(saved.get("config") or "{}") or {}).get("trainer") or {}).get("init_from")
    check(theirs == trainer.init_from, f"trainer.init_from={trainer.init_from} with trainer.resume="
          f"{trainer.resume}: resume continues a run (weights from its own last.pt), init_from starts a new one "
          f"(that run {'started from ' + str(theirs) if theirs else 'did not start from a checkpoint'}); drop one")
    record = saved.get("init_from")
    return record if isinstance(record, dict) else None


def shape(tensor: torch.Tensor | None) -> str:
    return "absent" if tensor is None else str(tuple(tensor.shape))


def load(model: nn.Module, source: Source, trainer: TrainerConfig) -> dict[str, Any]:
    """The source's tensors into `model` (strict: all of them, or one line naming what differs; partial: those whose
    names and shapes match); prints one line saying what was loaded, skipped and left fresh."""
    ours, theirs = model.state_dict(), source.weights
    fits = [k for k in ours if k in theirs and theirs[k].shape == ours[k].shape]
    mismatched = [k for k in ours if k in theirs and theirs[k].shape != ours[k].shape]
    missing, unexpected = [k for k in ours if k not in theirs], [k for k in theirs if k not in ours]
    where = f"trainer.init_from={trainer.init_from} ({source.path.name}, epoch {source.record['epoch']})"
    if trainer.init_mode == "strict":
        wrong = [f"{k}: {shape(theirs.get(k))} there vs {shape(ours.get(k))} here"
                 for k in (mismatched + missing + unexpected)[:SHOWN]]
        check(not (mismatched or missing or unexpected), f"{where} does not fit this model: {len(missing)} missing, "
              f"{len(unexpected)} unexpected, {len(mismatched)} mismatched ({'; '.join(wrong)}); use "
              "trainer.init_mode=partial to load what matches")
    check(bool(fits), f"{where}: no tensor of the source has a name and shape of this model's (it holds "
          f"{', '.join(list(theirs)[:SHOWN])}; here: {', '.join(list(ours)[:SHOWN])}); start from a run of this model")
    model.load_state_dict({k: theirs[k] for k in fits}, strict=trainer.init_mode == "strict")
    skipped = [f"{k}: {shape(theirs[k])} there vs {shape(ours.get(k))} here" for k in mismatched + unexpected]
    fresh = mismatched + missing
    if dist.is_rank0():
        print(f"{where}: {summary(len(fits), skipped, fresh)}", flush=True)
    return {"mode": trainer.init_mode, "loaded": len(fits), "skipped": skipped, "fresh": fresh}


def summary(loaded: int, skipped: list[str], fresh: list[str]) -> str:
    """`loaded N tensors; skipped M (name: shape there vs here, ...); left fresh K (names)`."""
    def some(items: list[str]) -> str:
        more = f", ... {len(items) - SHOWN} more" if len(items) > SHOWN else ""
        return f" ({'; '.join(items[:SHOWN])}{more})" if items else ""

    return f"loaded {loaded} tensors; skipped {len(skipped)}{some(skipped)}; left fresh {len(fresh)}{some(fresh)}"


def freeze(model: nn.Module, patterns: Iterable[Any]) -> list[str]:
    """requires_grad=False on the parameters that `patterns` match; a norm layer whose parameters are all frozen
    stays in eval mode (running statistics fixed). Returns the frozen names."""
    patterns = [str(p) for p in patterns]
    if not patterns:
        return []
    names = [name for name, _ in model.named_parameters()]
    unmatched("trainer.freeze", patterns, names)
    frozen = {n for n in names if any(matches(n, p) for p in patterns)}
    check(len(frozen) < len(names), f"trainer.freeze={patterns} freezes every parameter of the model: nothing would "
          "train; leave some out (e.g. the head)")
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, NORM_LAYERS) and own and not any(p.requires_grad for p in own):
            keep_in_eval(module)
    return [n for n in names if n in frozen]


def keep_in_eval(module: nn.Module) -> None:
    """`module.train(mode)` leaves it in eval mode: the engine's model.train() each epoch reaches it through its
    parent, and a frozen batch-norm layer must normalise with the statistics it was trained with."""
    def train(mode: bool = True) -> nn.Module:  # noqa: ARG001  (any mode: eval)
        return nn.Module.train(module, False)

    module.train = train  # an instance attribute: the class's train() is unchanged for every other module
    module.eval()


def groups(model: nn.Module, given: list[ParamGroup], trainer: TrainerConfig) -> list[ParamGroup]:
    """The optimizer's groups without the frozen parameters, each split by `lr_scales` (the first pattern that
    matches a name gives its factor; 1 for the others), the factor times the group's own scale (a GAN's nets).
    Without freeze or lr_scales, `given` itself: the optimizer a run always had."""
    if not trainer.freeze and not trainer.lr_scales:
        return given
    names = {id(p): n for n, p in model.named_parameters()}
    scales = {str(k): float(v) for k, v in (trainer.lr_scales or {}).items()}
    unmatched("trainer.lr_scales", scales, list(names.values()))
    out: list[ParamGroup] = []
    for group in given:
        split: dict[float, list[nn.Parameter]] = {}
        for param in group.params:
            if param.requires_grad:
                factor = next((s for p, s in scales.items() if matches(names[id(param)], p)), 1.0)
                split.setdefault(factor, []).append(param)
        out += [ParamGroup(params, group.lr_scale * factor) for factor, params in split.items()]
    return out

