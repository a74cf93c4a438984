"""`dltrain lr-find [--num K] [--min LO] [--max HI] [--epochs E] [OVERRIDES]`: a learning-rate range test.

The run that `dltrain OVERRIDES` would start is trained at K log-spaced rates from LO to HI (defaults: 16 from 1e-5
to 1), each held constant for E epochs (default 1), side by side as one stack in this one process (the vectorised
launcher's trainer, run/stacked.py); the suggestion is the rate whose run reached the lowest validation loss. Not the
steepest slope of one run whose rate is ramped up (Lightning's lr_find): there each rate is seen for a few steps
only, after the rates before it, so the answer moves with the range, the smoothing and the seed. A run that cannot
be stacked is refused in one line: there is no silent fallback to K runs one after another.

Each rate is an ordinary run folder under outputs/lr-find/DATE/TIME/ (config.yaml, metrics.json, its TensorBoard
events; no checkpoints: it is a probe); the curve is printed (tools/lr_chart.py) and saved as lr_find.png, the
numbers as lr_find.json, and the command that trains with the suggestion is printed last.
"""
from __future__ import annotations

import contextlib
import copy
import math
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dltrain.core.files import write_json_atomic
from dltrain.core.metrics_file import ENDED_OK
from dltrain.core.registry import ConfigError
from dltrain.run.config import RunConfig

# Keys the probe sets itself: the rate is what it searches, every rate is held constant (no schedule, no warm-up),
# all train the same budget (no early stopping), and a probe keeps no checkpoints. The suggested command keeps them.
REPLACED = ("optim.lr", "sched", "early_stopping", "trainer.max_epochs", "trainer.resume", "trainer.ckpt")
OPTIONS = {"--num": int, "--min": float, "--max": float, "--epochs": int}


@dataclass(frozen=True)
class Probe:
    """What lr-find trains: `num` rates log-spaced from `low` to `high`, each for `epochs` epochs."""

    num: int = 16
    low: float = 1e-5
    high: float = 1.0
    epochs: int = 1

    def rates(self) -> list[float]:
        """The rates, rounded to 3 significant digits (the value trained is the value printed)."""
        step = math.log10(self.high / self.low) / (self.num - 1)
        return [float(f"{self.low * 10 ** (k * step):.3g}") for k in range(self.num)]

    def problem(self) -> str | None:
        if not 3 <= self.num <= 64:
            return f"--num={self.num} must be between 3 and 64 (rates tried; the default 16 is 3 per decade)"
        if not 0 < self.low < self.high:
            return f"--min={self.low:g} and --max={self.high:g} must satisfy 0 < min < max (e.g. --min=1e-5 --max=1)"
        if self.epochs < 1:
            return f"--epochs={self.epochs} must be at least 1 (the epochs each rate trains)"
        return None


def read_options(args: list[str]) -> tuple[Probe, list[str], str | None]:
    """lr-find's own options (`--num=16` or `--num 16`) taken out of the arguments; the rest are a run's."""
    given: dict[str, Any] = {}
    rest: list[str] = []
    words = iter(args)
    for word in words:
        name, eq, value = word.partition("=")
        if name not in OPTIONS:
            rest.append(word)
            continue
        value = value if eq else next(words, "")
        try:
            given[name] = OPTIONS[name](value)
        except ValueError:
            kind = "a whole number" if OPTIONS[name] is int else "a number"
            return Probe(), rest, f"{name} takes {kind}, got '{value}' (e.g. {name}={getattr(Probe(), field(name))})"
    probe = Probe(**{field(name): value for name, value in given.items()})
    return probe, rest, probe.problem()


def field(option: str) -> str:
    return {"--num": "num", "--min": "low", "--max": "high", "--epochs": "epochs"}[option]


def key_of(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def replaced(overrides: list[str]) -> list[str]:
    """The user's overrides the probe sets itself (see REPLACED)."""
    return [o for o in overrides if any(key_of(o) == k or key_of(o).startswith(f"{k}.") for k in REPLACED)]


def probe_overrides(epochs: int) -> list[str]:
    return ["sched=constant", "early_stopping=none", f"trainer.max_epochs={epochs}", "trainer.ckpt.save_last=false",
            "trainer.ckpt.save_best=false"]


def member_configs(overrides: list[str], probe: Probe, project: Path | None) -> list[tuple[float, RunConfig]]:
    """Each rate's checked config: the run's, composed once (raises the ConfigError the run would fail with), with
    the probe's keys set and `optim.lr` set to the rate."""
    from hydra import initialize_config_dir

    from dltrain.core.conf_dirs import config_dir
    from dltrain.run.config import to_plain
    from dltrain.run.points import compose_checked, task_only

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg, problem = compose_checked(task_only(overrides) + probe_overrides(probe.epochs))
    if problem:
        raise ConfigError(problem)
    plain = to_plain(cfg)
    configs = []
    for lr in probe.rates():
        one = copy.deepcopy(plain)
        one["optim"]["lr"] = lr
        configs.append((lr, RunConfig.load(one, project)))
    return configs


def why_not(config: RunConfig) -> str | None:
    """Why these runs cannot be one stack (None: they can), in lr-find's words."""
    from dltrain.run.stacked import why_alone

    why = why_alone(config)
    return why.removesuffix(" trains alone") if why else None


def output_dir(overrides: list[str]) -> Path:
    """outputs/lr-find/DATE/TIME (hydra.run.dir=DIR, if given, instead)."""
    named = [o.partition("=")[2] for o in overrides if key_of(o) == "hydra.run.dir"]
    now = datetime.now()
    return Path(named[-1]) if named else Path("outputs/lr-find") / f"{now:%Y-%m-%d}" / f"{now:%H-%M-%S-%f}"


@dataclass
class Found:
    """What the probe found: per rate its lowest val/loss (None: it diverged or failed) and status; the best."""

    rates: list[float]
    losses: list[float | None]
    statuses: list[str]
    others: list[dict[str, float]]  # each rate's last epoch's other validation metrics (val/acc, ...)

    @property
    def best(self) -> int | None:
        finite = [k for k, loss in enumerate(self.losses) if loss is not None]
        return min(finite, key=lambda k: (self.losses[k], k)) if finite else None

    def near_best(self, share: float = 0.05) -> tuple[float, float]:
        """The lowest and highest rate whose val/loss is within `share` of the best's."""
        best = self.losses[self.best]
        near = [r for r, loss in zip(self.rates, self.losses) if loss is not None and loss <= best + share * abs(best)]
        return min(near), max(near)


def judged(rates: list[float], reports: list[dict[str, Any]]) -> Found:
    """Each rate's report read: its lowest val/loss (the probe monitors val/loss, mode min) and status."""
    losses: list[float | None] = []
    for report in reports:
        value = report.get("best")
        ok = report.get("status") == ENDED_OK[0] and report.get("monitor") == "val/loss"
        losses.append(float(value) if ok and value is not None and math.isfinite(value) else None)
    statuses = [str(r.get("status", "failed")) for r in reports]
    others = [{k: v for k, v in (r.get("final") or {}).items() if k.startswith("val/") and k != "val/loss"}
              for r in reports]
    return Found(rates, losses, statuses, others)


def edge_note(found: Found, probe: Probe) -> str | None:
    """Where the best is an end of the range, the curve may still fall beyond it: say which way to widen it."""
    if found.best == 0:
        return ("the lowest val/loss is at the range's bottom: a smaller rate may be better still "
                f"(try --min={probe.low / 100:g})")
    if found.best == len(found.rates) - 1:
        return ("the lowest val/loss is at the range's top: a larger rate may be better still "
                f"(try --max={probe.high * 100:g})")
    return None


def find(line: Any, probe: Probe) -> int:
    """Train the probe's rates as one stack and show what they found; the exit code (2: refused at the door)."""
    dropped = replaced(line.rest)
    kept = [a for a in line.rest if a not in dropped and key_of(a) != "hydra.run.dir"]
    try:
        configs = member_configs(kept, probe, line.project)
        why = why_not(configs[0][1])
        if why:
            raise ConfigError(refusal(why, probe, line.given))
    except ConfigError as err:
        return errors(err)
    root = output_dir(line.rest)
    print(f"lr-find: {probe.num} rates from {probe.low:g} to {probe.high:g} (log-spaced), each held constant for "
          f"{probe.epochs} epoch{'s' if probe.epochs > 1 else ''}, trained side by side as one stack", flush=True)
    if dropped:
        print(f"lr-find: the probe sets these itself (the command it suggests keeps them): {' '.join(dropped)}")
    members = member_list(configs, kept, root, probe)
    made = [folder for folder in (root, *root.parents) if not folder.exists()]  # removed again if refused
    started = time.monotonic()
    from dltrain.run.stacked import train_stack

    try:
        reports = train_stack(members, lambda i, report: None, together_only=True)
    except ConfigError as err:  # a user's model that the stack cannot batch: found once built
        shutil.rmtree(root, ignore_errors=True)
        for folder in made[1:]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty
        return errors(ConfigError(refusal(str(err), probe, line.given)))
    found = judged([lr for lr, _ in configs], reports)
    return show(found, probe, root, line, time.monotonic() - started)


def member_list(configs: list[tuple[float, RunConfig]], kept: list[str], root: Path, probe: Probe) -> list[Any]:
    from dltrain.run.stacked import Member

    task = [a for a in kept if not a.startswith("hydra.")]
    return [Member(config, root / f"{k:02d}_lr={lr:g}", [*task, *probe_overrides(probe.epochs), f"optim.lr={lr:g}"])
            for k, (lr, config) in enumerate(configs)]


def refusal(why: str, probe: Probe, given: list[str]) -> str:
    """The one line for a run that cannot be stacked, with the sweep that tries rates one after another instead."""
    import shlex

    rates = ",".join(f"{lr:g}" for lr in Probe(6, probe.low, probe.high, probe.epochs).rates())
    words = [a for a in given if key_of(a) not in ("optim.lr", "trainer.max_epochs", "hydra.run.dir")]
    sweep = shlex.join(["dltrain", "-m", *words, f"optim.lr={rates}", f"trainer.max_epochs={probe.epochs}"])
    return f"lr-find trains its rates as one stack and this run cannot be stacked: {why}; a sweep tries them one " \
           f"after another: {sweep}"


def errors(err: ConfigError) -> int:
    for problem in err.problems:
        print(f"dltrain: error: {problem}", file=sys.stderr, flush=True)
    return 2


def show(found: Found, probe: Probe, root: Path, line: Any, seconds: float) -> int:
    """The curve, the table, the suggestion and the command; lr_find.png and lr_find.json in `root`."""
    from dltrain.tools.lr_chart import draw_png, table, text_chart

    epochs = f"{probe.epochs} epoch{'s' if probe.epochs > 1 else ''}"
    print(f"trained in {seconds:.1f} s\n")
    width = shutil.get_terminal_size().columns
    print("\n".join([*text_chart(found.rates, found.losses, found.best, width), "", *table(found)]))
    if found.best is None:
        states = ", ".join(sorted(set(found.statuses)))
        print(f"dltrain: error: no rate gave a finite val/loss ({states}): see the runs in {root}; a smaller range "
              f"(--max) or a validation split (data.fractions) may help", file=sys.stderr)
        return 1
    best = found.rates[found.best]
    low, high = found.near_best()
    command = suggested_command(line.given, best)
    title = f"lr-find: lowest val/loss after {epochs} at each rate ({' '.join(line.given) or 'defaults'})"
    draw_png(root / "lr_find.png", found.rates, found.losses, found.best, title)
    write_json_atomic(root / "lr_find.json", {
        "rates": found.rates, "val_loss": found.losses, "status": found.statuses, "epochs": probe.epochs,
        "suggested": best, "within_5_percent": [low, high], "command": command,
        "runs": [f"{k:02d}_lr={lr:g}" for k, lr in enumerate(found.rates)]})
    print(f"\nsuggested: optim.lr={best:g}  (lowest val/loss {found.losses[found.best]:.4g} after {epochs}; "
          f"within 5% of it: {low:g} .. {high:g})")
    note = edge_note(found, probe)
    if note:
        print(f"note: {note}")
    print(f"curve: {root / 'lr_find.png'}   the runs: dltrain board {root}")
    print(f"run it: {command}", flush=True)
    return 0


def suggested_command(given: list[str], lr: float) -> str:
    """`dltrain` with the user's own arguments (their schedule and epochs included) and the suggested rate."""
    import shlex

    words = [a for a in given if key_of(a) not in ("optim.lr", "hydra.run.dir")]
    return shlex.join(["dltrain", *words, f"optim.lr={lr:g}"])
