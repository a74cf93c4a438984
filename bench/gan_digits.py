"""Does the README's GAN example draw digits? Train `dltrain experiment=gan_digits`, sample 100 digits from the
trained generator, and score them with a digits classifier.

The run is the real command line (a `dltrain` subprocess into its own run directory). The samples come from the
run's checkpoint through the path the TensorBoard sample grid uses: `evaluation.load_run(run).parts.model
.sample(n, generator)`. They are standardized like the training data, so the run's saved preprocessing
(pixel = x * std + mean, sklearn's grey levels 0..16) is undone and clipped to 0..16. The classifier is
scikit-learn's LogisticRegression trained here on the same run's digits train split (raw pixels / 16); its
accuracy and confidence on the real test split are printed as the reference. A sample counts as *confident*
when the classifier's top probability is >= --confidence. The same score is printed for the generator before
training (grey noise) as the floor.

    .venv/bin/python bench/gan_digits.py                       # the experiment as it is (100 epochs)
    .venv/bin/python bench/gan_digits.py --epochs 60 --json out.json trainer.seed=1
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RAMP = " .:-=+*#%@"  # ASCII shades from grey level 0 to 16


def train(run_dir: Path, overrides: list[str]) -> float:
    """`dltrain experiment=gan_digits OVERRIDES` into run_dir; returns its wall seconds."""
    exe = Path(sys.executable).parent / "dltrain"
    started = time.perf_counter()
    proc = subprocess.run([str(exe), "experiment=gan_digits", f"hydra.run.dir={run_dir}", *overrides],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"dltrain failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - started


def to_pixels(x: torch.Tensor, prep: dict[str, Any]) -> np.ndarray:
    """Standardized (N, 1, 8, 8) samples -> (N, 64) grey levels 0..16 (the run's scaling undone)."""
    mean, std = (torch.tensor(prep[k]).view(1, -1, 1, 1) for k in ("mean", "std"))  # one value per channel
    raw = x.detach().float() * std + mean
    return raw.clamp(0, 16).reshape(len(x), -1).numpy()


def score(classifier: Any, pixels: np.ndarray, confidence: float) -> dict[str, Any]:
    """Share of samples the classifier is confident about, and the classes those confident samples cover."""
    probs = classifier.predict_proba(pixels / 16)
    top, label = probs.max(axis=1), probs.argmax(axis=1)
    sure = top >= confidence
    counts = np.bincount(label[sure], minlength=10)
    return {"confident_share": float(sure.mean()), "classes_covered": int((counts > 0).sum()),
            "median_top_prob": float(np.median(top)), "confident_per_class": counts.tolist(),
            "labels": label.tolist()}


def ascii_digits(pixels: np.ndarray, labels: list[int], count: int = 10) -> str:
    """The first `count` samples side by side as ASCII art, each headed by the classifier's label."""
    lines = ["  ".join(f"[{labels[i]}]".ljust(8) for i in range(count))]
    for row in range(8):
        lines.append("  ".join("".join(RAMP[min(int(v / 16 * len(RAMP)), len(RAMP) - 1)]
                                       for v in pixels[i, row * 8:(row + 1) * 8]) for i in range(count)))
    return "\n".join(lines)


def evaluate(run_dir: Path, samples: int, confidence: float, seed: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    from dltrain.run.assemble import build
    from dltrain.tools.evaluation import load_run

    loaded = load_run(run_dir, prefer_best=False)  # last.pt: the end of training (a GAN has no "best" epoch)
    prep, data = loaded.preprocessing, loaded.parts.data
    assert prep is not None and "mean" in prep, "the digits run saved no scaling to undo"
    classifier = LogisticRegression(max_iter=3000).fit(to_pixels(data.train.x, prep) / 16, data.train.y.numpy())
    real = score(classifier, to_pixels(data.test.x, prep), confidence)
    real["accuracy"] = float(classifier.score(to_pixels(data.test.x, prep) / 16, data.test.y.numpy()))
    with torch.no_grad():
        fake = to_pixels(loaded.parts.model.sample(samples, torch.Generator().manual_seed(seed)), prep)
        torch.manual_seed(seed)
        untrained = to_pixels(build(loaded.parts.config).model.sample(samples, torch.Generator().manual_seed(seed)),
                              prep)
    result = {"generated": score(classifier, fake, confidence), "untrained": score(classifier, untrained, confidence),
              "real_test": real, "samples": samples, "confidence": confidence}
    result["ascii"] = ascii_digits(fake, result["generated"]["labels"])
    return result


def report(result: dict[str, Any]) -> str:
    rows = [f"{'samples':<22} {'confident':>9} {'classes':>7} {'median p':>8}  confident per class 0..9"]
    for key in ("generated", "untrained", "real_test"):
        s = result[key]
        rows.append(f"{key:<22} {s['confident_share']:>9.2f} {s['classes_covered']:>7d} {s['median_top_prob']:>8.2f}  "
                    f"{s['confident_per_class']}")
    acc = result["real_test"]["accuracy"]
    return "\n".join([*rows, f"classifier: LogisticRegression on the run's train split, test accuracy {acc:.3f}; "
                      f"confident = top probability >= {result['confidence']}", result["ascii"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the experiment's)")
    parser.add_argument("--samples", type=int, default=100, help="generated digits to score")
    parser.add_argument("--confidence", type=float, default=0.5, help="top class probability that counts as sure")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled noise")
    parser.add_argument("--run-dir", type=Path, default=None, help="keep the run here (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("overrides", nargs="*", help="more dltrain overrides, e.g. trainer.seed=1")
    args = parser.parse_args()
    overrides = [*([f"trainer.max_epochs={args.epochs}"] if args.epochs else []), *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp) / "run"
        seconds = train(run_dir, overrides)
        result = {"command": " ".join(["dltrain experiment=gan_digits", *overrides]), "train_wall_s": seconds,
                  **evaluate(run_dir, args.samples, args.confidence, args.seed)}
    print(f"{result['command']}: {seconds:.1f} s wall (start-up included)")
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in result.items() if k != "ascii"}, indent=1))


if __name__ == "__main__":
    main()
