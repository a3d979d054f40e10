"""Mask-based input mixers: FMix, GridMix, SmoothMix, ResizeMix and SaliencyMix.

Each builds a pixel weight map of x (1 keeps x's pixel, 0 takes the partner's) and mixes
x̃ = m·x + (1-m)·x[perm]; the λ reported (and used for the targets) is the mean of m, i.e. the
fraction of each image kept from x. With ``lam_mode=batch`` one map serves the whole batch
(as in the authors' code) and is built on the host, where λ is needed anyway; with
``lam_mode=sample`` every sample gets its own map, built on x's device."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from mixbench.errors import ConfigError
from mixbench.methods.sample_mixing import (SampleMixer, box_area_lam, box_bounds, box_halves,
                                            box_keep_weight, host_to, mix_pairs)
from mixbench.registry import METHODS


class MaskMixer(SampleMixer):
    """A mixer defined by ``make_mask(lam, height, width) -> n×H×W`` weights of x for an
    n-vector of λ (one per sample), on λ's device. ``batch_mask`` makes the one host mask of
    ``lam_mode=batch``; a subclass overrides it when one mask can be made with fewer tensor
    operations (on the CPU each small op costs microseconds, which add up against a blend
    of a whole batch)."""

    def make_mask(self, lam: torch.Tensor, height: int, width: int) -> torch.Tensor:
        raise NotImplementedError

    def batch_mask(self, lam: float, height: int, width: int) -> tuple[torch.Tensor, float]:
        """One H×W host mask for the batch and its mean (the λ used)."""
        mask = self.make_mask(torch.tensor([lam]), height, width)[0]
        return mask, mask.mean().item()

    def mix_inputs(self, x, perm, lam):
        h, w = x.shape[-2:]
        if isinstance(lam, float):
            mask, lam_used = self.batch_mask(lam, h, w)
            return mix_pairs(x, perm, host_to(mask, x)), lam_used
        mask = self.make_mask(lam, h, w)
        return mix_pairs(x, perm, mask[:, None].to(x.dtype)), mask.mean((1, 2))


def keep_top_fraction(scores: torch.Tensor, lam: torch.Tensor,
                      levels: int = 256) -> torch.Tensor:
    """n×H×W scores → a 0/1 mask per row marking its round(λ·H·W) highest pixels, so that the
    mask mean is λ up to one pixel. Without a sort (the costly part for a mask per sample):
    scores are quantised to ``levels`` per row, whole levels are taken from the top, and the
    pixels of the one level that straddles the count are taken in raster order."""
    n, h, w = scores.shape
    flat = scores.reshape(n, -1)
    keep = torch.round(lam * (h * w)).long()[:, None]
    # (amin and amax, not aminmax: its per-row CPU kernel is the slower; docs/benchmarks.md)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    level = ((flat - low) * ((levels - 1) / (high - low).clamp_min(1e-12))).long()
    # a histogram per row (scatter_add: bincount would read its size back from the GPU)
    counts = torch.zeros(n, levels, dtype=torch.long, device=flat.device).scatter_add_(
        1, level, torch.ones((), dtype=torch.long, device=flat.device).expand_as(level))
    above = counts.flip(1).cumsum(1).flip(1) - counts  # pixels in strictly higher levels
    boundary = (above >= keep).sum(1, keepdim=True)  # the level where the count is reached
    from_boundary = keep - above.gather(1, boundary.clamp_max(levels - 1))
    at_boundary = level == boundary
    mask = (level > boundary) | (at_boundary & (at_boundary.cumsum(1) <= from_boundary))
    return mask.view(n, h, w).float()


@functools.lru_cache(maxsize=16)
def fourier_scale(height: int, width: int, decay_power: float, device) -> torch.Tensor:
    """1/max(f, 1/max(H, W))^δ over the H×(W//2+1) frequencies of a real FFT (cached: the
    same for every step; never modified)."""
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    freq = torch.sqrt(fy * fy + fx * fx).clamp_min(1.0 / max(height, width))
    return freq.pow(-decay_power)


def low_frequency_noise(n: int, height: int, width: int, decay_power: float,
                        device) -> torch.Tensor:
    """n×H×W real images whose Fourier amplitudes fall as 1/f^δ (FMix's grey noise):
    complex Gaussian spectra scaled by 1/max(f, 1/max(H, W))^δ, then an inverse real FFT.
    (torch's complex normal has variance 1/2 per part, FMix's 1: the same noise up to a
    constant factor, which no threshold of it sees.)"""
    scale = fourier_scale(height, width, decay_power, torch.device(device))
    spectrum = torch.randn(n, height, width // 2 + 1, dtype=torch.complex64, device=device)
    return torch.fft.irfft2(spectrum.mul_(scale), s=(height, width))


@METHODS.register("fmix")
class FMix(MaskMixer):
    """FMix (Harris et al., 2020): x keeps the λ·H·W pixels where low-frequency Fourier noise
    is highest, a binary mask of blob-like regions; λ = mask mean."""

    def __init__(self, *, num_classes: int, decay_power: float = 3.0, **common):
        super().__init__(num_classes=num_classes, **common)
        if not decay_power > 0:
            raise ConfigError(f"method.decay_power must be > 0, got {decay_power}")
        self.decay_power = float(decay_power)

    def make_mask(self, lam, height, width):
        noise = low_frequency_noise(len(lam), height, width, self.decay_power, lam.device)
        return keep_top_fraction(noise, lam)

    def batch_mask(self, lam, height, width):
        # One mask: an exact top-k of the noise (no quantisation needed).
        noise = low_frequency_noise(1, height, width, self.decay_power, "cpu")
        keep = round(lam * height * width)
        top = noise.view(-1).topk(keep, sorted=False).indices  # (their order is not needed)
        mask = torch.zeros(height * width).index_fill_(0, top, 1.0)
        return mask.view(height, width), keep / (height * width)


GRID_MASKS = ("holes", "cells")


def float_range(key: str, value, low: float, high: float) -> tuple[float, float]:
    """A number or [low, high] (OpenMixup's ``to_2tuple``) as a pair inside [low, high]."""
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not low <= float(pair[0]) <= float(pair[1]) <= high:
        raise ConfigError(f"method.{key} must be a number or [low, high] with "
                          f"{low} <= low <= high <= {high}, got {value!r}")
    return float(pair[0]), float(pair[1])


def slice_cover(size: int, start: torch.Tensor, stop: torch.Tensor) -> torch.Tensor:
    """n×size indicators of the pixels that ``row[start:stop] = 1`` sets with Python's slice
    rules, for n×J starts and stops (a negative bound counts from the end, then both are
    clipped to [0, size]), united over J."""
    start = torch.where(start < 0, start + size, start).clamp(0, size)
    stop = torch.where(stop < 0, stop + size, stop).clamp(0, size)
    pixel = torch.arange(size, device=start.device)
    inside = (pixel >= start[..., None]) & (pixel < stop[..., None])  # n×J×size
    return inside.any(1).float()


def grid_holes(lam: torch.Tensor, height: int, width: int, n_holes: tuple[int, int],
               hole_aspect: tuple[float, float], cut_area: tuple[float, float],
               cut_aspect: tuple[float, float]) -> torch.Tensor:
    """OpenMixup's GridMix mask (its gridmix.py ``rand_grid``), n×H×W partner weights for an
    n-vector of λ: a region of area ``cut_area``·H·W and aspect ``cut_aspect`` at a uniform
    place is cut into patches of width ⌈region width / n⌉ (n uniform in ``n_holes``) and
    height patch width·``hole_aspect``; the top-left hole of each patch, of side
    ⌊patch·√(1-λ)⌋ (at least 1 pixel, at most patch - 1), comes from the partner. Region
    offsets are written as OpenMixup's slices ``mask[y1:y2, x1:x2] = 1`` read them (a
    negative offset counts from the far end), so the mask is a row indicator times a column
    indicator. (OpenMixup swaps H and W in places; on square images this is its mask.)"""
    n, device = len(lam), lam.device
    f64 = dict(dtype=torch.float64, device=device)

    def uniform(bounds):
        return torch.rand(n, **f64) * (bounds[1] - bounds[0]) + bounds[0]

    holes = torch.randint(n_holes[0], n_holes[1] + 1, (n,), device=device)
    aspect, area_ratio, cut_ratio = uniform(hole_aspect), uniform(cut_area), uniform(cut_aspect)
    area = (height * width * area_ratio).trunc()
    cut_w = (area / cut_ratio).sqrt().trunc()
    cut_h = (cut_w * cut_ratio).trunc()
    left = ((width - cut_w) * torch.rand(n, **f64)).trunc().long()
    top = ((height - cut_h) * torch.rand(n, **f64)).trunc().long()
    cut_w, cut_h = cut_w.long(), cut_h.long()
    # OpenMixup asserts n <= region width // 2; never binding at 32×32 (the region is at
    # least 16 wide), here n is lowered instead so that small images work
    holes = torch.minimum(holes, (cut_w // 2).clamp_min(1))
    patch_w = (cut_w + holes - 1) // holes  # ⌈w / n⌉
    patch_h = (patch_w * aspect).trunc().long().clamp_min(1)
    ratio = (1.0 - lam.double()).clamp_min(0).sqrt()
    hole_w = torch.minimum((patch_w * ratio).trunc().long().clamp_min(1), patch_w - 1)
    hole_h = torch.minimum((patch_h * ratio).trunc().long().clamp_min(1), patch_h - 1)
    count_y = (cut_h + patch_h - 1) // patch_h  # OpenMixup's ny = ⌈h / patch height⌉

    def line(size, offset, extent, patch, hole, count, most):
        # ``most`` bounds the count from the options, so nothing is read back from the device
        j = torch.arange(most + 1, device=device)
        first = torch.minimum(j * patch[:, None], extent[:, None])
        last = torch.minimum(j * patch[:, None] + hole[:, None], extent[:, None])
        last = torch.where(j <= count[:, None], last, first)  # holes past the count: none
        return slice_cover(size, offset[:, None] + first, offset[:, None] + last)

    tallest = math.isqrt(int(height * width * cut_area[1] * cut_aspect[1])) + 1  # ≥ cut_h
    rows = line(height, top, cut_h, patch_h, hole_h, count_y, tallest)
    cols = line(width, left, cut_w, patch_w, hole_w, holes, n_holes[1])
    return rows[:, :, None] * cols[:, None, :]


@METHODS.register("gridmix")
class GridMix(MaskMixer):
    """GridMix (Baek et al., 2021). ``mask: holes`` (OpenMixup's gridmix.py, the default):
    a grid of square holes inside a random region, each hole's side √(1-λ) of its patch's,
    from the partner (see ``grid_holes``); λ = mask mean. ``mask: cells``: an n×n grid
    (n uniform in ``n_holes``, both ends included) whose cells are each taken from the
    partner with probability 1-λ; λ = mask mean (the cells kept may differ from λ by chance)."""

    def __init__(self, *, num_classes: int, mask: str = "holes",
                 n_holes: tuple[int, int] = (2, 6), hole_aspect_ratio=1.0,
                 cut_area_ratio=(0.5, 1.0), cut_aspect_ratio=(0.5, 2.0), **common):
        super().__init__(num_classes=num_classes, **common)
        if mask not in GRID_MASKS:
            raise ConfigError(f"method.mask must be one of {GRID_MASKS}, got {mask!r}")
        n_holes = tuple(n_holes)
        if len(n_holes) != 2 or not 1 <= n_holes[0] <= n_holes[1]:
            raise ConfigError(f"method.n_holes must be [low, high] with 1 <= low <= high, "
                              f"got {list(n_holes)}")
        self.mask = mask
        self.n_holes = (int(n_holes[0]), int(n_holes[1]))
        self.hole_aspect_ratio = float_range("hole_aspect_ratio", hole_aspect_ratio, 1e-3, 1e3)
        self.cut_area_ratio = float_range("cut_area_ratio", cut_area_ratio, 1e-3, 1.0)
        self.cut_aspect_ratio = float_range("cut_aspect_ratio", cut_aspect_ratio, 1e-3, 1e3)

    def holes(self, lam, height, width):
        return grid_holes(lam, height, width, self.n_holes, self.hole_aspect_ratio,
                          self.cut_area_ratio, self.cut_aspect_ratio)

    def make_mask(self, lam, height, width):
        if self.mask == "holes":  # a sample that is not mixed (λ = 1) keeps every pixel
            return self.holes(lam, height, width).mul_((lam < 1.0)[:, None, None]).neg_().add_(1.0)
        low, high = self.n_holes
        n, device = len(lam), lam.device
        grid = torch.randint(0, high - low + 1, (n,), device=device)  # cells per side - low
        cells = (torch.rand(n, high, high, device=device) < lam[:, None, None]).float()
        cell_row = cell_indices(height, low, high, device).index_select(0, grid)  # n×H
        cell_col = cell_indices(width, low, high, device).index_select(0, grid)  # n×W
        # rows of cells first (n×H×high), then columns with a broadcast (stride-0) index:
        # no n×H×W index is ever built
        rows = cells.gather(1, cell_row[:, :, None].expand(n, height, high))
        return rows.gather(2, cell_col[:, None, :].expand(n, height, width))

    def batch_mask(self, lam, height, width):
        if self.mask == "holes":
            return super().batch_mask(lam, height, width)
        low, high = self.n_holes
        choice = int(torch.randint(0, high - low + 1, ()))  # cells per side - low
        cells = (torch.rand(low + choice, low + choice) < lam).float()
        cpu = torch.device("cpu")
        cell_row = cell_indices(height, low, high, cpu)[choice]
        cell_col = cell_indices(width, low, high, cpu)[choice]
        mask = cells.index_select(0, cell_row).index_select(1, cell_col)
        return mask, mask.mean().item()

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, mask={self.mask!r}, n_holes={list(self.n_holes)})"


@functools.lru_cache(maxsize=64)
def cell_indices(size: int, low: int, high: int, device) -> torch.Tensor:
    """Row g - low: the grid cell (0..g-1) of each of ``size`` pixels along one side, for
    each grid g in low..high, on ``device`` (cached; never modified)."""
    grids = torch.arange(low, high + 1, device=device)[:, None]
    return torch.arange(size, device=device) * grids // size


SIGMA_LAWS = ("uniform", "area")
LABEL_WEIGHTS = ("pasted", "kept")


@METHODS.register("smoothmix")
class SmoothMix(MaskMixer):
    """SmoothMix (Lee et al., 2020): the partner's weight is a Gaussian blob
    exp(-d²/2σ²) around a random centre, so the pasted region has soft edges; λ = mask mean.

    ``sigma_law``: ``uniform`` (OpenMixup's smoothmix.py, the default): σ = (0.25 + u/4)·H,
    u ~ U[0, 1), and the centre at a uniform pixel corner (row r ∈ {0..H-1}, column
    c ∈ {0..W-1}; pixel i's centre is at i + 0.5); λ ~ Beta(α, α) is drawn but does not
    shape the blob. ``area``: σ follows λ, the unclipped blob holds (1-λ)·H·W pixels of weight
    (2πσ² = (1-λ)·H·W, as a CutMix box of area 1-λ would), around a uniform real centre.

    ``label_weight``: ``pasted`` (OpenMixup's code, the default): the own label is weighted
    by the partner's pixel share, 1 - λ (OpenMixup returns the blob's mass as the λ of its
    loss ``λ·CE(y) + (1-λ)·CE(y[perm])``); ``kept``: by the own share λ, as every other mixer.
    ``label_lam=independent`` draws the label weights instead, whatever ``label_weight``
    says. ``info["lam"]`` is the own pixel share either way."""

    def __init__(self, *, num_classes: int, sigma_law: str = "uniform",
                 label_weight: str = "pasted", **common):
        super().__init__(num_classes=num_classes, **common)
        if sigma_law not in SIGMA_LAWS:
            raise ConfigError(f"method.sigma_law must be one of {SIGMA_LAWS}, got {sigma_law!r}")
        if label_weight not in LABEL_WEIGHTS:
            raise ConfigError(f"method.label_weight must be one of {LABEL_WEIGHTS}, "
                              f"got {label_weight!r}")
        self.sigma_law, self.label_weight = sigma_law, label_weight

    def blob(self, n: int, height: int, width: int, lam: torch.Tensor | None, device):
        """-1/(2σ²) (an n-vector) and the centres (n×1 rows, n×1 columns) of ``n`` blobs."""
        if self.sigma_law == "uniform":
            sigma = torch.rand(n, device=device).div_(4).add_(0.25).mul_(height)
            scale = sigma.square_().mul_(-2.0).reciprocal_()
            centre_y = torch.randint(0, height, (n, 1), device=device)
            centre_x = torch.randint(0, width, (n, 1), device=device)
            return scale, centre_y, centre_x
        # 2πσ² = (1-λ)HW. λ = 1 (not mixed) would have σ = 0: its scale is 0 instead and its
        # profile is zeroed by the caller, since exponents of -10¹² send torch's CPU exp down
        # its slow path for underflowing results.
        scale = (-math.pi / ((1.0 - lam) * (height * width)).clamp_min(1e-12)).mul_(lam < 1.0)
        centre = torch.rand(n, 2, device=device)
        return scale, centre[:, :1] * height, centre[:, 1:] * width

    def partner_profiles(self, lam, height, width):
        """n×H and n×W: the blob is separable, exp(-dy²/2σ²)·exp(-dx²/2σ²), so exp runs on
        n·(H+W) values and the partner's weight is their outer product. A sample that is
        not mixed (λ = 1) gets a zero profile."""
        n, device = len(lam), lam.device
        scale, centre_y, centre_x = self.blob(n, height, width, lam, device)
        along_y = (pixel_centres(height, device) - centre_y).square_()
        along_x = (pixel_centres(width, device) - centre_x).square_()
        along_y = along_y.mul_(scale[:, None]).exp_().mul_((lam < 1.0)[:, None])
        return along_y, along_x.mul_(scale[:, None]).exp_()

    def make_mask(self, lam, height, width):
        along_y, along_x = self.partner_profiles(lam, height, width)
        return torch.mul(along_y[:, :, None], along_x[:, None, :]).neg_().add_(1.0)

    def mix_inputs(self, x, perm, lam):
        if isinstance(lam, float):
            return super().mix_inputs(x, perm, lam)
        # Per sample: blend with the partner's weight (no 1 - mask pass) and take each mask
        # mean from the two profiles' means (no reduction over n×H×W).
        along_y, along_x = self.partner_profiles(lam, *x.shape[-2:])
        weight = torch.mul(along_y[:, None, :, None], along_x[:, None, None, :])
        lam_used = 1.0 - along_y.mean(1) * along_x.mean(1)
        return mix_pairs(x, perm, weight.to(x.dtype), of="partner"), lam_used

    def batch_mask(self, lam, height, width):
        # One blob on the host; the mask mean from the two profiles' means.
        along_y, along_x = self.partner_profiles(torch.tensor([lam]), height, width)
        mask = torch.outer(along_y[0], along_x[0]).neg_().add_(1.0)
        return mask, 1.0 - along_y.mean().item() * along_x.mean().item()

    def target_lam(self, lam, lam_used):
        if self.label_weight == "kept" or self.label_lam != "same":
            return super().target_lam(lam, lam_used)
        # the pasted share, 1 - λ; a sample that is not mixed (λ = 1) keeps its own label
        if isinstance(lam_used, float):
            return 1.0 - lam_used if lam_used < 1.0 else 1.0
        return torch.where(lam_used < 1.0, 1.0 - lam_used, 1.0)

    def __repr__(self) -> str:
        return (f"{super().__repr__()[:-1]}, sigma_law={self.sigma_law!r}, "
                f"label_weight={self.label_weight!r})")


@functools.lru_cache(maxsize=16)
def pixel_centres(size: int, device) -> torch.Tensor:
    """0.5, 1.5, … along one side (cached; never modified)."""
    return torch.arange(size, device=device) + 0.5


def nearest_source(offset: torch.Tensor, out_size: torch.Tensor, in_size: int) -> torch.Tensor:
    """B×L source indices of nearest-neighbour resizing from ``in_size`` to ``out_size`` (a
    B-vector) for output positions ``offset`` (B×L; negatives count as 0): ⌊i·s⌋ with
    s = in/out in float32, which is what ``F.interpolate(mode="nearest")`` computes."""
    # in/out divided in float32, as torch's kernel has it (``in_size / out_size`` would
    # multiply by a rounded 1/out: ⌊37·96/74⌋ would come out as 48, not 47)
    scale = torch.full_like(out_size, in_size, dtype=torch.float32).div_(out_size.clamp_min(1))
    return (offset.clamp_min(0) * scale[:, None]).long().clamp_max(in_size - 1)


@functools.lru_cache(maxsize=256)
def shrink_index(out_size: int, in_size: int, device) -> torch.Tensor:
    """``nearest_source`` of a whole side, out_size pixels from in_size (cached; never
    modified)."""
    offset = torch.arange(out_size, device=device)[None]
    return nearest_source(offset, torch.full((1,), out_size, device=device), in_size)[0]


def partner_pixels(x: torch.Tensor, perm: torch.Tensor, src_row: torch.Tensor,
                   src_col: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x[perm[b], :, src_row[b, r], src_col[b, q]] as B×C×R×Q, written into ``out`` if given
    (any B×C×R×Q view, e.g. a box inside the mixed batch). ``src_row`` is B×R and ``src_col``
    B×Q, or 1×R and 1×Q when every image picks the same pixels. Whole rows by index_select
    (row copies), then columns by gather: several times faster on the CPU than indexing
    along the last dimension directly."""
    b, c, h, w = x.shape
    # row (perm[b]·C + channel)·H + src_row of x viewed as (B·C·H)×W
    row_index = torch.add(channel_rows(c, h, x.device) + src_row[:, None, :],
                          perm[:, None, None], alpha=c * h)
    rows = x.reshape(-1, w).index_select(0, row_index.view(-1)).view(b, c, -1, w)
    cols = src_col[:, None, None, :].expand(b, c, rows.shape[2], -1)
    return torch.gather(rows, 3, cols) if out is None else torch.gather(rows, 3, cols, out=out)


@functools.lru_cache(maxsize=16)
def channel_rows(channels: int, height: int, device) -> torch.Tensor:
    """C×1: the first row of each channel in an image viewed as (C·H)×W (cached; never
    modified)."""
    return (torch.arange(channels, device=device) * height)[:, None]


@METHODS.register("resizemix")
class ResizeMix(SampleMixer):
    """ResizeMix (Qin et al., 2020): shrink the whole partner image to a box of side
    τ·(H, W) and paste it at a random place inside x; λ = 1 - pasted area / image area.
    τ = low + (high - low)·u with u ~ Beta(α, α) (α = 1: the paper's uniform τ over
    ``scope``); nearest-neighbour resizing as ``F.interpolate(mode="nearest")`` does it
    (source pixel ⌊i·in/out⌋ in float32), so pasted pixels are the partner's values."""

    def __init__(self, *, num_classes: int, scope: tuple[float, float] = (0.1, 0.8),
                 **common):
        super().__init__(num_classes=num_classes, **common)
        scope = tuple(scope)
        if len(scope) != 2 or not 0.0 <= scope[0] <= scope[1] <= 1.0:
            raise ConfigError(f"method.scope must be [low, high] with 0 <= low <= high <= 1, "
                              f"got {list(scope)}")
        self.scope = (float(scope[0]), float(scope[1]))

    def mix_inputs(self, x, perm, lam):
        low, high = self.scope
        b, c, h, w = x.shape
        if isinstance(lam, float):  # one box for the batch: copy only the box
            tau = low + (high - low) * lam
            box_h, box_w = int(tau * h), int(tau * w)
            u, v = torch.rand(2).tolist()  # the box's corner, uniform over whole pixels
            top, left = int(u * (h - box_h + 1)), int(v * (w - box_w + 1))
            rows, cols = shrink_index(box_h, h, x.device), shrink_index(box_w, w, x.device)
            # The shrunk partners are gathered straight into the box: no box-sized buffers
            # besides the partners' rows.
            mixed = x.clone()
            partner_pixels(x, perm, rows[None], cols[None],
                           out=mixed.narrow(2, top, box_h).narrow(3, left, box_w))
            return mixed, box_area_lam(top, top + box_h, left, left + box_w, h, w)
        tau = torch.where(lam < 1.0, low + (high - low) * lam, 0.0)
        box_h, box_w = (tau * h).long(), (tau * w).long()
        top = (torch.rand(b, device=x.device) * (h - box_h + 1)).long()
        left = (torch.rand(b, device=x.device) * (w - box_w + 1)).long()
        keep = box_keep_weight(top, top + box_h, left, left + box_w, h, w, x.dtype)
        # Source pixel of each pasted pixel in the partner, as F.interpolate's nearest mode
        # picks it; pixels outside the box index something valid (they are not used).
        src_row = nearest_source(torch.arange(h, device=x.device) - top[:, None], box_h, h)
        src_col = nearest_source(torch.arange(w, device=x.device) - left[:, None], box_w, w)
        resized = partner_pixels(x, perm, src_row, src_col)
        # lerp with a 0/1 weight, not torch.where: several times faster on the CPU
        mixed = resized.lerp_(x, keep[:, None])
        return mixed, box_area_lam(top, top + box_h, left, left + box_w, h, w)


def separable_blur(images: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Filter B×1×H×W images with ``taps`` along rows, then columns, replicating the border.
    Shifted slices, not conv2d: several times faster for one channel and a few taps."""
    radius = len(taps) // 2
    h, w = images.shape[-2:]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    rows = padded[..., :, 0:w] * taps[0]
    for i, tap in enumerate(taps[1:], 1):
        rows += padded[..., :, i:i + w] * tap
    out = rows[..., 0:h, :] * taps[0]
    for i, tap in enumerate(taps[1:], 1):
        out += rows[..., i:i + h, :] * tap
    return out


GAUSS_11 = [math.exp(-(i - 5) ** 2 / 18) for i in range(11)]  # σ = 3, as OpenCV's 11×11
GAUSS_11 = [t / sum(GAUSS_11) for t in GAUSS_11]


def spectral_residual_saliency(x: torch.Tensor, max_side: int = 64) -> torch.Tensor:
    """Spectral-residual saliency (Hou & Zhang, 2007) of each image of B×C×H×W, as OpenCV's
    StaticSaliencySpectralResidual computes it: grey image at most ``max_side`` a side,
    S = |IFFT(exp(log|F| - box3(log|F|) + i·phase))|², then a Gaussian blur (11×11, σ=3).
    Borders are replicated (OpenCV reflects). Returns B×h×w saliency at that working size."""
    grey = x.float().mean(1, keepdim=True)
    h, w = grey.shape[-2:]
    if max(h, w) > max_side:
        grey = F.interpolate(grey, size=(min(h, max_side), min(w, max_side)), mode="area")
    spectrum = torch.fft.fft2(grey)
    log_amplitude = torch.log(spectrum.abs() + 1e-8)
    smoothed = separable_blur(log_amplitude, [1 / 3] * 3)
    # exp(log|F| - smoothed + i·phase) = F · exp(-smoothed)
    saliency = torch.fft.ifft2(spectrum * torch.exp(-smoothed)).abs().square()
    return separable_blur(saliency, GAUSS_11)[:, 0]


def saliency_peaks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of each image's saliency maximum, in x's pixel coordinates."""
    saliency = spectral_residual_saliency(x)
    sh, sw = saliency.shape[-2:]
    flat = saliency.flatten(1).argmax(1)
    h, w = x.shape[-2:]
    return (flat // sw) * h // sh, (flat % sw) * w // sw


SALIENCY_BOXES = ("clipped", "inside")


@METHODS.register("saliencymix")
class SaliencyMix(SampleMixer):
    """SaliencyMix (Uddin et al., 2021): a CutMix box of area 1-λ centred on the peak of a
    partner's spectral-residual saliency, pasted from the partner.

    ``box: clipped`` (OpenMixup's saliencymix.py, the default): with ``lam_mode=batch`` one
    box for the whole batch, centred on the saliency peak of the first sample's partner and
    clipped to the image, λ = 1 - clipped area (per sample: each box on its own partner's
    peak, clipped). ``box: inside``: every sample's box is centred on its own partner's peak
    and moved inside the image rather than clipped, so λ = 1 - box area exactly."""

    def __init__(self, *, num_classes: int, box: str = "clipped", **common):
        super().__init__(num_classes=num_classes, **common)
        if box not in SALIENCY_BOXES:
            raise ConfigError(f"method.box must be one of {SALIENCY_BOXES}, got {box!r}")
        self.box = box

    def mix_inputs(self, x, perm, lam):
        h, w = x.shape[-2:]
        if self.box == "clipped":
            if isinstance(lam, float):  # one box from the first pair's partner, as OpenMixup
                rows, cols = saliency_peaks(x.index_select(0, perm[:1]))
                box = box_bounds(lam, h, w, centre=(rows, cols))
                # the clipped area is known on the device only: the one λ as a B-vector
                lam_used = box_area_lam(*box, h, w).expand(len(x))
                return mix_pairs(x, perm, box_keep_weight(*box, h, w, x.dtype)), lam_used
            rows, cols = saliency_peaks(x.index_select(0, perm))
            box = box_bounds(lam, h, w, centre=(rows, cols))
            return mix_pairs(x, perm, box_keep_weight(*box, h, w, x.dtype)[:, None]), \
                box_area_lam(*box, h, w)
        rows, cols = saliency_peaks(x)
        centre = rows[perm], cols[perm]  # the partner's peak
        box = box_bounds(lam, h, w, centre=centre, keep_inside=True)
        keep = box_keep_weight(*box, h, w, x.dtype)
        if isinstance(lam, float):  # every box has the drawn size: λ is known on the host
            half_h, half_w = box_halves(lam, h, w)
            lam_used = 1.0 - 4 * half_h * half_w / (h * w)
        else:
            lam_used = box_area_lam(*box, h, w)
        return mix_pairs(x, perm, keep[:, None]), lam_used

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, box={self.box!r})"
