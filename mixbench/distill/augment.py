"""Differentiable Siamese augmentation (DSA, Zhao & Bilen 2021) as MTT uses it: colour, crop,
cutout, flip, scale and rotate, differentiable in the pixels, with one draw of the random
parameters shared by the whole batch. Draws come from an explicit ``torch.Generator`` (CPU),
so a distillation iteration seeded by its number replays exactly on resume."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mixbench.errors import ConfigError

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _affine(x: torch.Tensor, theta: list[list[float]]) -> torch.Tensor:
    matrix = torch.tensor(theta, dtype=x.dtype, device=x.device).expand(len(x), 2, 3)
    grid = F.affine_grid(matrix, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


class DSA(nn.Module):
    """``strategy``: the ops, joined by ``_`` (MTT: color_crop_cutout_flip_scale_rotate).
    ``mode``: ``single`` applies one op drawn per call (DSA's and MTT's default), ``all``
    applies every op in turn. The magnitudes are DSA's ``ParamDiffAug`` defaults."""

    def __init__(self, strategy: str = "color_crop_cutout_flip_scale_rotate", *,
                 mode: str = "single", brightness: float = 1.0, saturation: float = 2.0,
                 contrast: float = 0.5, crop: float = 0.125, cutout: float = 0.5,
                 scale: float = 1.2, rotate: float = 15.0):
        super().__init__()
        self.ops = tuple(op for op in strategy.split("_") if op)
        unknown = [op for op in self.ops if op not in OPS]
        if unknown or not self.ops:
            raise ConfigError(f"the DSA strategy takes ops from {OPS} joined by '_', got "
                              f"{strategy!r}")
        if mode not in ("single", "all"):
            raise ConfigError(f"the DSA mode must be single or all, got {mode!r}")
        self.mode = mode
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast
        self.crop_ratio, self.cutout_ratio = crop, cutout
        self.scale_ratio, self.rotate_degrees = scale, rotate

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.mode == "single":
            ops = [self.ops[int(torch.randint(len(self.ops), (), generator=generator))]]
        else:
            ops = self.ops
        for op in ops:
            x = getattr(self, op)(x, generator)
        return x

    def color(self, x, g):
        x = x + (_rand(g) - 0.5) * self.brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_rand(g) * self.saturation) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (_rand(g) + self.contrast) + mean

    def crop(self, x, g):
        """A translation by up to ``crop`` of the size, the uncovered border zero."""
        h, w = x.shape[-2:]
        ph, pw = int(h * self.crop_ratio + 0.5), int(w * self.crop_ratio + 0.5)
        dy = int(torch.randint(-ph, ph + 1, (), generator=g))
        dx = int(torch.randint(-pw, pw + 1, (), generator=g))
        padded = F.pad(x, (pw, pw, ph, ph))
        return padded[..., ph + dy:ph + dy + h, pw + dx:pw + dx + w]

    def cutout(self, x, g):
        h, w = x.shape[-2:]
        sh, sw = int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)
        cy, cx = int(_rand(g) * h), int(_rand(g) * w)
        mask = torch.ones(h, w, dtype=x.dtype, device=x.device)
        mask[max(cy - sh // 2, 0):cy + sh - sh // 2, max(cx - sw // 2, 0):cx + sw - sw // 2] = 0
        return x * mask

    def flip(self, x, g):
        return x.flip(3) if _rand(g) < 0.5 else x

    def scale(self, x, g):
        low = 1.0 / self.scale_ratio
        sx = _rand(g) * (self.scale_ratio - low) + low
        sy = _rand(g) * (self.scale_ratio - low) + low
        return _affine(x, [[sx, 0.0, 0.0], [0.0, sy, 0.0]])

    def rotate(self, x, g):
        angle = (_rand(g) - 0.5) * 2 * self.rotate_degrees * math.pi / 180
        c, s = math.cos(angle), math.sin(angle)
        return _affine(x, [[c, s, 0.0], [-s, c, 0.0]])

    def extra_repr(self) -> str:
        return f"ops={'_'.join(self.ops)}, mode={self.mode}"
