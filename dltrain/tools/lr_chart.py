"""lr-find's results (tools/lr_find.py): each rate's lowest validation loss read from its run's report, the
suggestion, and the curve over the log-spaced rates, as text for the terminal and as a PNG drawn with Pillow
(already a dependency: no plotting library for one chart).

Rates that diverged or failed have no loss: `x` on the top row. Losses far above the lowest rate's (a rate that
made the model worse than barely training it) are clipped to the top row (`^`), so that the part of the curve
worth reading keeps the height.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dltrain.core.files import write_atomic
from dltrain.core.metrics_file import ENDED_OK

ROWS = 10  # the text chart's height, in lines


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


def edge_note(found: Found, probe: Any) -> str | None:
    """Where the best is an end of the range, the curve may still fall beyond it: say which way to widen it."""
    if found.best == 0:
        return ("the lowest val/loss is at the range's bottom: a smaller rate may be better still "
                f"(try --min={probe.low / 100:g})")
    if found.best == len(found.rates) - 1:
        return ("the lowest val/loss is at the range's top: a larger rate may be better still "
                f"(try --max={probe.high * 100:g})")
    return None


def ceiling(losses: list[float | None]) -> float:
    """The chart's top: the highest loss not far above the lowest rate's (its run barely moved from the start)."""
    finite = [loss for loss in losses if loss is not None]
    reference = next(loss for loss in losses if loss is not None)
    kept = [loss for loss in finite if loss <= 1.5 * reference + 1e-12] or finite
    return max(kept)


def height_of(top: float, bottom: float) -> tuple[Callable[[float], float], bool]:
    """A loss's height on the chart, 0 (the lowest) to 1 (the top), and whether the scale is logarithmic: it is
    where the losses span a factor of 3 or more, so that the low end, where the suggestion is, is not squashed."""
    if bottom > 0 and top / bottom >= 3:
        return (lambda loss: math.log(min(loss, top) / bottom) / math.log(top / bottom)), True
    span = (top - bottom) or 1.0
    return (lambda loss: (min(loss, top) - bottom) / span), False


def text_chart(rates: list[float], losses: list[float | None], best: int | None, width: int = 80) -> list[str]:
    """val/loss (rows) over the rates (columns, log-spaced, up to 4 characters each in `width`): `o` a rate, `*`
    the best, `^` above the chart, `x` diverged or failed."""
    if best is None:
        return []
    column = max(1, min(4, (width - 12) // len(rates)))
    top, bottom = ceiling(losses), losses[best]
    height, log = height_of(top, bottom)
    grid = [[" "] * (column * len(rates)) for _ in range(ROWS)]
    for k, loss in enumerate(losses):
        col = column * k + column // 2
        if loss is None or loss > top:
            grid[0][col] = "x" if loss is None else "^"
            continue
        row = round((1 - height(loss)) * (ROWS - 1))
        grid[row][col] = "*" if k == best else "o"
    labels = {0: f"{top:.3g}", ROWS - 1: f"{bottom:.3g}", ROWS // 2: "val/loss", ROWS // 2 + 1: "(log)" if log else ""}
    pad = max(len(text) for text in labels.values())
    lines = [f"{labels.get(r, ''):>{pad}} |{''.join(cells).rstrip()}" for r, cells in enumerate(grid)]
    lines.append(f"{'':>{pad}} +{'-' * (column * len(rates))}")
    lines.append(f"{'':>{pad}}  {axis_labels(rates, column)}  (learning rate, log scale)")
    return lines


def axis_labels(rates: list[float], column: int) -> str:
    """The first, last and a few rates between under their columns, where they fit."""
    line = ""
    for k in range(0, len(rates), max(1, len(rates) // 4)):
        col = column * k + column // 2 - 2
        if col >= len(line) + 1 or not line:
            line = line.ljust(max(col, 0)) + f"{rates[k]:g}"
    last = f"{rates[-1]:g}"
    end = column * (len(rates) - 1) + column // 2 - 2
    return line + " " * max(1, end - len(line)) + last if end > len(line) else line


def table(found: Found) -> list[str]:
    """One line per rate: its val/loss (or status) and its other validation metrics; the best marked."""
    names = sorted({name for other in found.others for name in other})
    lines = [f"  {'lr':>9}  {'val/loss':>9}  " + "  ".join(f"{n:>9}" for n in names)]
    for k, (lr, loss) in enumerate(zip(found.rates, found.losses)):
        shown = f"{loss:9.4g}" if loss is not None else f"{found.statuses[k]:>9}"
        extra = "  ".join(f"{found.others[k][n]:9.4g}" if n in found.others[k] else f"{'':9}" for n in names)
        mark = "  <- lowest val/loss" if k == found.best else ""
        lines.append(f"  {lr:>9g}  {shown}  {extra}".rstrip() + mark)
    return lines


def draw_png(path: Path, rates: list[float], losses: list[float | None], best: int, title: str) -> None:
    """The curve as a 800x480 PNG (written atomically): log-x rates, val/loss (log where it spans 3x), the best in
    red."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top_px, bottom_px = 800, 480, 80, 30, 50, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    top, low = ceiling(losses), losses[best]
    height_at, log = height_of(top, low)
    lo_log, hi_log = math.log10(rates[0]), math.log10(rates[-1])

    def x_of(rate: float) -> float:
        return left + (math.log10(rate) - lo_log) / (hi_log - lo_log) * (width - left - right)

    def y_of(loss: float) -> float:
        return top_px + (1 - height_at(loss)) * (height - top_px - bottom_px)

    for decade in range(math.ceil(lo_log - 1e-9), math.floor(hi_log + 1e-9) + 1):  # grid and labels per decade
        x = x_of(10.0 ** decade)
        draw.line([(x, top_px), (x, height - bottom_px)], fill=(225, 225, 225))
        draw.text((x, height - bottom_px + 8), f"{10.0 ** decade:g}", fill="black", font=font, anchor="mt")
    for loss in (low, math.sqrt(low * top) if log else (low + top) / 2, top):
        draw.text((left - 8, y_of(loss)), f"{loss:.3g}", fill="black", font=font, anchor="rm")
    draw.rectangle([(left, top_px), (width - right, height - bottom_px)], outline="black")
    points = [(x_of(r), y_of(loss)) for r, loss in zip(rates, losses) if loss is not None]
    if len(points) > 1:
        draw.line(points, fill=(40, 90, 200), width=2)
    for r, loss in zip(rates, losses):
        x, y = x_of(r), y_of(loss) if loss is not None else top_px
        if loss is None:
            draw.line([(x - 5, y - 5), (x + 5, y + 5)], fill="gray", width=2)
            draw.line([(x - 5, y + 5), (x + 5, y - 5)], fill="gray", width=2)
        elif loss > top:  # clipped: a triangle pointing up, the loss beside it
            draw.polygon([(x, y - 7), (x - 6, y + 4), (x + 6, y + 4)], fill="gray")
            draw.text((x - 8, y + 8), f"{loss:.3g}", fill="gray", font=font, anchor="rt")
        else:
            draw.ellipse([(x - 4, y - 4), (x + 4, y + 4)], fill=(40, 90, 200))
    bx, by = x_of(rates[best]), y_of(low)
    draw.ellipse([(bx - 7, by - 7), (bx + 7, by + 7)], outline="red", width=3)
    draw.text((bx, by - 12), f"lr={rates[best]:g}", fill="red", font=font, anchor="mb")
    draw.text((width / 2, 20), title[:100], fill="black", font=font, anchor="mm")
    legend = "learning rate (log scale)   x: diverged   triangle: above the chart"
    draw.text((width / 2, height - 18), legend, fill="black", font=font, anchor="mm")
    draw.text((12, top_px - 20), "val/loss (log scale)" if log else "val/loss", fill="black", font=font)
    write_atomic(path, lambda handle: image.save(handle, format="PNG"))
