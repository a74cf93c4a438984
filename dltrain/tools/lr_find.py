"""`dltrain lr-find [--num K] [--min LO] [--max HI] [--epochs E|auto] [OVERRIDES]`: a learning-rate range test.

The run that `dltrain OVERRIDES` would start is trained at K log-spaced rates from LO to HI (defaults: 16 from 1e-5
to 1), each held constant for E epochs (default auto: the fewest with STEPS_PER_RATE optimizer steps, at most the
run's max_epochs), side by side as one stack in this one process (the vectorised launcher's trainer,
run/stacked.py); the suggestion is the rate whose run reached the lowest validation loss. Not the
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
import dataclasses
import math
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dltrain.core.files import write_json_atomic
from dltrain.core.registry import ConfigError
from dltrain.run.config import RunConfig
from dltrain.tools.lr_chart import Found, edge_note, judged

# Keys the probe sets itself: the rate is what it searches, every rate is held constant (no schedule, no warm-up),
# all train the same budget (no early stopping), and a probe keeps no checkpoints. The suggested command keeps them.
REPLACED = ("optim.lr", "sched", "early_stopping", "trainer.max_epochs", "trainer.resume", "trainer.ckpt")
PROBE_KEYS = ["sched=constant", "early_stopping=none", "trainer.ckpt.save_last=false", "trainer.ckpt.save_best=false"]
# --epochs auto: the fewest epochs with this many optimizer steps per rate. Measured (bench/README.md, lr_find.py):
# one epoch (17 steps on digits, 63 on MNIST) favoured rates too large for the full run; 5 MNIST epochs (315 steps)
# found the full run's best rate on 4 of 5 seeds, and more epochs changed nothing.
STEPS_PER_RATE = 300


def epochs_value(text: str) -> int | None:
    """--epochs: a whole number, or `auto` (None)."""
    return None if text == "auto" else int(text)


OPTIONS = {"--num": int, "--min": float, "--max": float, "--epochs": epochs_value}


@dataclass(frozen=True)
class Probe:
    """What lr-find trains: `num` rates log-spaced from `low` to `high`, each for `epochs` epochs (None: auto)."""

    num: int = 16
    low: float = 1e-5
    high: float = 1.0
    epochs: int | None = None

    def rates(self) -> list[float]:
        """The rates, rounded to 3 significant digits (the value trained is the value printed)."""
        step = math.log10(self.high / self.low) / (self.num - 1)
        return [float(f"{self.low * 10 ** (k * step):.3g}") for k in range(self.num)]

    def problem(self) -> str | None:
        if not 3 <= self.num <= 64:
            return f"--num={self.num} must be between 3 and 64 (rates tried; the default 16 is 3 per decade)"
        if not 0 < self.low < self.high:
            return f"--min={self.low:g} and --max={self.high:g} must satisfy 0 < min < max (e.g. --min=1e-5 --max=1)"
        if self.epochs is not None and self.epochs < 1:
            return f"--epochs={self.epochs} must be at least 1 (the epochs each rate trains) or auto"
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
            given[FIELDS[name]] = OPTIONS[name](value)
        except ValueError:
            kind = {"--num": "a whole number", "--epochs": "a whole number or auto"}.get(name, "a number")
            return Probe(), rest, f"{name} takes {kind}, got '{value}' (e.g. {name}={EXAMPLES[name]})"
    probe = Probe(**given)
    return probe, rest, probe.problem()


FIELDS = {"--num": "num", "--min": "low", "--max": "high", "--epochs": "epochs"}
EXAMPLES = {"--num": "16", "--min": "1e-05", "--max": "1", "--epochs": "auto"}


def key_of(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def replaced(overrides: list[str]) -> list[str]:
    """The user's overrides the probe sets itself (see REPLACED)."""
    return [o for o in overrides if any(key_of(o) == k or key_of(o).startswith(f"{k}.") for k in REPLACED)]


def probe_overrides(epochs: int) -> list[str]:
    """What a rate's run has on top of the user's overrides (its record in metrics.json), but its `optim.lr`."""
    return [*PROBE_KEYS[:2], f"trainer.max_epochs={epochs}", *PROBE_KEYS[2:]]


def composed(overrides: list[str]) -> dict[str, Any]:
    """The run's config with the probe's keys, composed once (the ConfigError the run would fail with)."""
    from hydra import initialize_config_dir

    from dltrain.core.conf_dirs import config_dir
    from dltrain.run.config import to_plain
    from dltrain.run.points import compose_checked, task_only

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg, problem = compose_checked(task_only(overrides) + PROBE_KEYS)
    if problem:
        raise ConfigError(problem)
    return to_plain(cfg)


def at_rate(plain: dict[str, Any], lr: float, epochs: int | None, project: Path | None) -> RunConfig:
    """The checked config of the run at rate `lr` for `epochs` (None: the run's own max_epochs)."""
    one = copy.deepcopy(plain)
    one["optim"]["lr"] = lr
    if epochs is not None:
        one["trainer"]["max_epochs"] = epochs
    return RunConfig.load(one, project)


def budget(config: RunConfig, probe: Probe) -> tuple[int, str]:
    """Each rate's epochs and how they were chosen (words for the header): --epochs, or auto: the fewest epochs with
    STEPS_PER_RATE optimizer steps, at most the run's own max_epochs (the data is built once to count them)."""
    if probe.epochs is not None:
        return probe.epochs, ""
    from dltrain.core.engine import min_share, steps_per_epoch
    from dltrain.run.assemble import build

    parts = build(config)
    steps = steps_per_epoch(len(parts.data.train), config.data.batch_size, 1, min_share(parts.model))
    epochs = max(1, min(config.trainer.max_epochs, math.ceil(STEPS_PER_RATE / steps)))
    return epochs, (f" ({epochs * steps:,} optimizer steps; --epochs auto: {STEPS_PER_RATE} or more, at most the "
                    f"run's {config.trainer.max_epochs} epochs)")


def member_configs(overrides: list[str], probe: Probe, project: Path | None) -> tuple[list[tuple[float, RunConfig]],
                                                                                      int]:
    """Each rate's checked config and the epochs each trains (the bench's way in; `find` checks the run can be
    stacked before it builds the data for --epochs auto)."""
    plain = composed(overrides)
    epochs, _ = budget(at_rate(plain, probe.low, None, project), probe)
    return [(lr, at_rate(plain, lr, epochs, project)) for lr in probe.rates()], epochs


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


def find(line: Any, probe: Probe) -> int:
    """Train the probe's rates as one stack and show what they found; the exit code (2: refused at the door)."""
    dropped = replaced(line.rest)
    kept = [a for a in line.rest if a not in dropped and key_of(a) != "hydra.run.dir"]
    try:
        configs, probe, how = prepared(line, probe, kept, dropped)
    except ConfigError as err:
        return errors(err)
    root = output_dir(line.rest)
    print(f"lr-find: {probe.num} rates from {probe.low:g} to {probe.high:g} (log-spaced), trained side by side as one "
          f"stack,\n         each held constant for {epochs_text(probe.epochs)}{how}", flush=True)
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


def prepared(line: Any, probe: Probe, kept: list[str], dropped: list[str]) -> tuple[list[tuple[float, RunConfig]],
                                                                                    Probe, str]:
    """Each rate's checked config, the probe with its epochs settled, and how they were chosen; raises the
    ConfigError of a run that does not compose or cannot be stacked (before --epochs auto builds its data)."""
    own_epochs = [a for a in dropped if key_of(a) == "trainer.max_epochs"]  # the cap of --epochs auto
    plain = composed(kept + own_epochs)
    first = at_rate(plain, probe.low, None, line.project)
    why = why_not(first)
    if why:
        raise ConfigError(refusal(why, probe, line.given))
    epochs, how = budget(first, probe)
    configs = [(lr, at_rate(plain, lr, epochs, line.project)) for lr in probe.rates()]
    return configs, dataclasses.replace(probe, epochs=epochs), how


def epochs_text(epochs: int | None) -> str:
    return f"{epochs} epoch{'s' if epochs != 1 else ''}"


def member_list(configs: list[tuple[float, RunConfig]], kept: list[str], root: Path, probe: Probe) -> list[Any]:
    from dltrain.run.stacked import Member

    task = [a for a in kept if not a.startswith("hydra.")]
    return [Member(config, root / f"{k:02d}_lr={lr:g}", [*task, *probe_overrides(probe.epochs), f"optim.lr={lr:g}"])
            for k, (lr, config) in enumerate(configs)]


def refusal(why: str, probe: Probe, given: list[str]) -> str:
    """The one line for a run that cannot be stacked, with the sweep that tries rates one after another instead."""
    import shlex

    rates = ",".join(f"{lr:g}" for lr in Probe(6, probe.low, probe.high).rates())
    budget = [f"trainer.max_epochs={probe.epochs}"] if probe.epochs is not None else []
    words = [a for a in given if key_of(a) not in ("optim.lr", "hydra.run.dir") and not (budget and key_of(a) ==
                                                                                        "trainer.max_epochs")]
    sweep = shlex.join(["dltrain", "-m", *words, f"optim.lr={rates}", *budget])
    return f"lr-find trains its rates as one stack and this run cannot be stacked: {why}; a sweep tries them one " \
           f"after another: {sweep}"


def errors(err: ConfigError) -> int:
    for problem in err.problems:
        print(f"dltrain: error: {problem}", file=sys.stderr, flush=True)
    return 2


def show(found: Found, probe: Probe, root: Path, line: Any, seconds: float) -> int:
    """The curve, the table, the suggestion and the command; lr_find.png and lr_find.json in `root`."""
    from dltrain.tools.lr_chart import draw_png, table, text_chart

    epochs = epochs_text(probe.epochs)
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
