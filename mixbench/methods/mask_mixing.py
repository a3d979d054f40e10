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


@METHODS.register("gridmix")
class GridMix(MaskMixer):
    """GridMix (Baek et al., 2021): cut the image into an n×n grid (n uniform in
    ``n_holes``, both ends included) and take each cell from the partner with probability
    1-λ; λ = mask mean (the cells kept may differ from λ by chance)."""

    def __init__(self, *, num_classes: int, n_holes: tuple[int, int] = (2, 6), **common):
        super().__init__(num_classes=num_classes, **common)
        n_holes = tuple(n_holes)
        if len(n_holes) != 2 or not 1 <= n_holes[0] <= n_holes[1]:
            raise ConfigError(f"method.n_holes must be [low, high] with 1 <= low <= high, "
                              f"got {list(n_holes)}")
        self.n_holes = (int(n_holes[0]), int(n_holes[1]))

    def make_mask(self, lam, height, width):
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
        low, high = self.n_holes
        choice = int(torch.randint(0, high - low + 1, ()))  # cells per side - low
        cells = (torch.rand(low + choice, low + choice) < lam).float()
        cpu = torch.device("cpu")
        cell_row = cell_indices(height, low, high, cpu)[choice]
        cell_col = cell_indices(width, low, high, cpu)[choice]
        mask = cells.index_select(0, cell_row).index_select(1, cell_col)
        return mask, mask.mean().item()


@functools.lru_cache(maxsize=64)
def cell_indices(size: int, low: int, high: int, device) -> torch.Tensor:
    """Row g - low: the grid cell (0..g-1) of each of ``size`` pixels along one side, for
    each grid g in low..high, on ``device`` (cached; never modified)."""
    grids = torch.arange(low, high + 1, device=device)[:, None]
    return torch.arange(size, device=device) * grids // size


@METHODS.register("smoothmix")
class SmoothMix(MaskMixer):
    """SmoothMix (Lee et al., 2020): the partner's weight is a Gaussian blob
    exp(-d²/2σ²) around a uniform random centre, so the pasted region has soft edges;
    λ = mask mean. σ is set by λ ~ Beta(α, α): the unclipped blob holds (1-λ)·H·W pixels
    of weight (2πσ² = (1-λ)HW), as a CutMix box of area 1-λ would."""

    def partner_profiles(self, lam, height, width):
        """n×H and n×W: the blob is separable, exp(-dy²/2σ²)·exp(-dx²/2σ²), so exp runs on
        n·(H+W) values and the partner's weight is their outer product."""
        n, device = len(lam), lam.device
        # -1/(2σ²) per sample. λ = 1 (not mixed at all: the partner's weight is 0) would have
        # σ = 0: its scale is 0 instead and its profile is zeroed below, since exponents of
        # -10¹² send torch's CPU exp down its slow path for underflowing results.
        mixed = lam < 1.0
        scale = (-math.pi / ((1.0 - lam) * (height * width)).clamp_min(1e-12)).mul_(mixed)
        centre = torch.rand(n, 2, device=device)
        along_y = (pixel_centres(height, device) - centre[:, :1] * height).square_()
        along_x = (pixel_centres(width, device) - centre[:, 1:] * width).square_()
        along_y = along_y.mul_(scale[:, None]).exp_().mul_(mixed[:, None])
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
        # One blob: the same with Python floats for σ and the centre, and the mask mean from
        # the two profiles' means (a third of make_mask's time for n = 1).
        scale = -math.pi / max((1.0 - lam) * (height * width), 1e-12)
        cy, cx = torch.rand(2).tolist()
        along_y = pixel_centres(height, "cpu").sub(cy * height).square_().mul_(scale).exp_()
        along_x = pixel_centres(width, "cpu").sub(cx * width).square_().mul_(scale).exp_()
        mask = torch.outer(along_y, along_x).neg_().add_(1.0)
        return mask, 1.0 - along_y.mean().item() * along_x.mean().item()


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


@METHODS.register("saliencymix")
class SaliencyMix(SampleMixer):
    """SaliencyMix (Uddin et al., 2021): a CutMix box of area 1-λ centred on the peak of the
    partner's spectral-residual saliency, pasted from the partner. The box is moved inside
    the image rather than clipped, so λ = 1 - box area exactly (the authors clip)."""

    def mix_inputs(self, x, perm, lam):
        h, w = x.shape[-2:]
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
