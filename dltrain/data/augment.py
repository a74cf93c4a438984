"""Image augmentation of a training batch on its own device, vectorized over the batch (no per-sample Python):
random crop after zero padding, horizontal flip, small rotation. The engine applies it to training batches only.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dltrain.core.registry import check

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Pad by `padding` pixels, then take an HxW window at a random offset per sample (one gather)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, padded.shape[3])
    picked = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    return picked.gather(3, cols)


def hflip(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), device=x.device, generator=gen) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def rotate(x: torch.Tensor, max_degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by a random angle in [-max_degrees, max_degrees] (bilinear, zero fill)."""
    angle = (torch.rand(len(x), device=x.device, generator=gen) * 2 - 1) * math.radians(max_degrees)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def build_augment(*, crop_padding: int = 0, flip: bool = False, rotate_degrees: float = 0.0) -> Augment | None:
    """The composed augmentation, or None when everything is off (then the engine skips it)."""
    check(crop_padding >= 0, f"data.augment.crop_padding={crop_padding} must be >= 0 (pixels)")
    check(0 <= rotate_degrees <= 180, f"data.augment.rotate_degrees={rotate_degrees} must be in [0, 180]")
    if not (crop_padding or flip or rotate_degrees):
        return None

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        check(x.dim() == 4, f"data.augment works on images (N, C, H, W); the batch is {tuple(x.shape)}")
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if crop_padding:
            x = random_crop(x, crop_padding, gen)
        if flip:
            x = hflip(x, 0.5, gen)
        if rotate_degrees:
            x = rotate(x, rotate_degrees, gen)
        # gather and grid_sample return NCHW: give a channels_last batch back as it came (no conversion in the conv)
        return x.contiguous(memory_format=torch.channels_last) if nhwc else x

    return augment
