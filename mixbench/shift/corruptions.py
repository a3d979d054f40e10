"""The 15 corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019) at severities 1-5,
computed on a whole uint8 batch in torch, on the images' device.

The parameter tables are CIFAR-10-C's, from the reference generator (``make_cifar_c.py`` in the
authors' robustness repository); the ``imagecorruptions`` package ships ImageNet-C's tables,
which are much stronger on 32×32 images. Pixel-sized parameters (blur radii, shuffle distance)
are CIFAR's numbers and are used as they are on other sizes (Fashion-MNIST's 28×28); the elastic
transform's are fractions of the image size, as in the reference. Grey (1-channel) images take
the same formulas with the grey value in place of the colour.

How close each one is to the reference formula (checked against scipy, OpenCV, scikit-image
and Pillow on random images, where the reference's libraries allow):

* Same formula, randomness from a ``torch.Generator`` instead of numpy's global state, so the
  results agree in distribution, not pixel for pixel: gaussian_noise, shot_noise, fog (the same
  diamond-square plasma), glass_blur (scipy's Gaussian taps; the reference's pixel "swaps",
  which on numpy views of RGB pixels copy the neighbour rather than swap, reproduced as they
  are), elastic_transform (the same random affine, reflect-101 border, and displacement field
  smoothed and sampled with scipy's mirrored border).
* Same formula, no randomness, equal to the reference up to float32 rounding before the
  truncation to 8 bits (at most one level, on few pixels): contrast, brightness (the
  RGB→HSV→RGB round trip with V raised, in closed form: scaling a pixel by V'/V keeps its hue
  and saturation), zoom_blur (scipy's order-1 zoom is a bilinear resize with aligned corners,
  and the zoom factors come from the same ``np.arange``), defocus_blur (OpenCV's disk kernel,
  reflect-101 border), pixelate (Pillow's BOX coefficients, each pass rounded to 8 bits).
* Approximations:
  - motion_blur (and the snow layer's streaks): ImageMagick's one-sided Gaussian line kernel
    (width 2·radius+1, offsets rounded as ImageMagick rounds them), edge pixels repeated at the
    border, rebuilt here; ImageMagick itself is not used. Snow is otherwise the same formula.
  - impulse_noise: every value turns to 0 or 255 with probability ``amount`` (half each);
    scikit-image's salt-and-pepper placement rule has changed between versions, so this is the
    same rate, not necessarily the rule of the version that made CIFAR-10-C.
  - jpeg_compression: libjpeg through torchvision instead of Pillow, at the same quality with
    libjpeg's default chroma subsampling; one image at a time, on the CPU. Where both link the
    same libjpeg the pixels are Pillow's.
  - frost: NOT CIFAR-10-C's frost. The reference blends crops of six frost photographs that
    are not part of this package; here the frost layer is a procedural texture (a level per
    image, plasma haze and short bright needles, tinted blue-white; its mean, spread and detail
    set near those of crops of the photographs), blended with CIFAR-10-C's weights. Results on
    it are not comparable with published frost numbers.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from mixbench.errors import ConfigError

Tensor = torch.Tensor
Params = tuple  # one severity's row of a table

SEVERITIES = (1, 2, 3, 4, 5)


# --- filters shared by several corruptions ------------------------------------------------
def _pad_symmetric(x: Tensor, pad: int) -> Tensor:
    """Pad H and W by mirroring with the edge pixel repeated (scipy's 'reflect', which
    ``torch.nn.functional.pad`` lacks), for any pad width."""
    def mirrored(n: int) -> Tensor:
        index = torch.arange(-pad, n + pad, device=x.device) % (2 * n)
        return torch.where(index >= n, 2 * n - 1 - index, index)

    return x.index_select(-2, mirrored(x.shape[-2])).index_select(-1, mirrored(x.shape[-1]))


def _gaussian_taps(sigma: float, truncate: float, like: Tensor) -> Tensor:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate·σ + 0.5), normalised."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (taps / taps.sum())[None]


def _gaussian_filter(x: Tensor, sigma: float, truncate: float, border: str) -> Tensor:
    """scipy.ndimage.gaussian_filter over H and W; ``border`` 'nearest' or 'reflect' (scipy's
    names). Used where the reference calls scikit-image's ``gaussian``."""
    if sigma <= 0:
        return x
    taps = _gaussian_taps(sigma, truncate, x)
    if border == "nearest":
        return kornia.filters.filter2d_separable(x, taps, taps, border_type="replicate")
    radius = taps.shape[-1] // 2
    return kornia.filters.filter2d_separable(_pad_symmetric(x, radius), taps, taps,
                                             padding="valid")


def _line_kernels(angles: Tensor, distances: Tensor, weights: Tensor) -> Tensor:
    """One square kernel per angle (degrees) with ``weights[j]`` at ``distances[j]`` pixels
    along the angle from the centre, offsets rounded as ImageMagick's motion blur rounds them
    (ceil(v - 0.5)). Used as a correlation kernel, so the output samples along the line."""
    reach = int(math.ceil(float(distances.abs().max())))
    size = 2 * reach + 1
    theta = torch.deg2rad(angles)[:, None]
    dx = torch.ceil(distances * torch.cos(theta) - 0.5).long() + reach
    dy = torch.ceil(distances * torch.sin(theta) - 0.5).long() + reach
    kernels = torch.zeros(len(angles), size * size, dtype=weights.dtype, device=weights.device)
    kernels.scatter_add_(1, dy * size + dx, weights.expand(len(angles), -1).contiguous())
    return kernels.view(-1, size, size)


def _motion_blur_kernels(angles: Tensor, radius: float, sigma: float, like: Tensor) -> Tensor:
    """ImageMagick's MotionBlurImage kernel: width 2·radius+1 taps along the angle, weighted by
    a one-sided Gaussian of ``sigma``."""
    width = 2 * int(math.ceil(radius)) + 1
    steps = torch.arange(width, dtype=like.dtype, device=like.device)
    weights = torch.exp(-(steps ** 2) / (2 * sigma ** 2))
    return _line_kernels(angles, steps, weights / weights.sum())


def _motion_blur_8bit(x: Tensor, angles: Tensor, radius: float, sigma: float) -> Tensor:
    """Motion-blurred ``x`` in [0, 1], rounded to 8 bits as the reference's PNG round trip."""
    kernels = _motion_blur_kernels(angles, radius, sigma, x)
    blurred = kornia.filters.filter2d(x, kernels, border_type="replicate")
    return torch.round(blurred.clamp(0, 1) * 255) / 255


def _uniform(shape, low: float, high: float, g: torch.Generator, like: Tensor) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=g, device=like.device,
                                           dtype=like.dtype)


def _zoom_crop(x: Tensor, factor: float) -> Tensor:
    """The reference's ``clipped_zoom``: crop the centre 1/factor of each axis, zoom it back up
    with scipy's order-1 zoom (output round(crop·factor), corners aligned), trim to size."""
    height, width = x.shape[-2:]
    crop_h, crop_w = math.ceil(height / factor), math.ceil(width / factor)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = x[..., top:top + crop_h, left:left + crop_w]
    zoomed = F.interpolate(crop, size=(round(crop_h * factor), round(crop_w * factor)),
                           mode="bilinear", align_corners=True)
    trim_top, trim_left = (zoomed.shape[-2] - height) // 2, (zoomed.shape[-1] - width) // 2
    return zoomed[..., trim_top:trim_top + height, trim_left:trim_left + width]


def _plasma(batch: int, size: int, decay: float, g: torch.Generator, like: Tensor) -> Tensor:
    """The reference's diamond-square height map (``plasma_fractal``), one per image, B×S×S in
    [0, 1]; ``size`` a power of two."""
    heights = torch.zeros(batch, size, size, dtype=like.dtype, device=like.device)
    step, wibble = size, 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        return total / 4 + wibble * _uniform(total.shape, -wibble, wibble, g, like)

    while step >= 2:
        half = step // 2
        corners = heights[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        heights[:, half::step, half::step] = wibbled_mean(squares)
        centres = heights[:, half::step, half::step]
        across = (centres + centres.roll(1, dims=1)) + (corners + corners.roll(-1, dims=2))
        heights[:, 0::step, half::step] = wibbled_mean(across)
        down = (centres + centres.roll(1, dims=2)) + (corners + corners.roll(-1, dims=1))
        heights[:, half::step, 0::step] = wibbled_mean(down)
        step, wibble = half, wibble / decay
    low = heights.amin(dim=(1, 2), keepdim=True)
    heights = heights - low
    return heights / heights.amax(dim=(1, 2), keepdim=True)


def _plasma_like(x: Tensor, decay: float, g: torch.Generator) -> Tensor:
    """A plasma map cropped to x's size, B×1×H×W (the reference crops a 32×32 map)."""
    height, width = x.shape[-2:]
    size = 1 << (max(height, width) - 1).bit_length()
    return _plasma(len(x), size, decay, g, x)[:, None, :height, :width]


def _grey(x: Tensor) -> Tensor:
    """OpenCV's RGB→grey weights (the grey value itself for 1-channel images)."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


# --- the corruptions: float images in [0, 1] in, float out ---------------------------------
def _gaussian_noise(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    (sigma,) = params
    noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    return x + sigma * noise


def _shot_noise(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    (photons,) = params  # photons per unit of intensity: fewer is noisier
    return torch.poisson(x * photons, generator=g) / photons


def _impulse_noise(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    (amount,) = params
    flipped = torch.rand(x.shape, generator=g, device=x.device) < amount
    salt = torch.rand(x.shape, generator=g, device=x.device) < 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


def _disk_kernel(radius: float, alias_blur: float, like: Tensor) -> Tensor:
    """The reference's ``disk``: an aliased disk on a 17×17 grid (wider past radius 8),
    normalised, smoothed by OpenCV's 3×3 (5×5) Gaussian with reflect-101 border; trimmed to
    its non-zero support, which changes no output."""
    reach, blur_size = (8, 3) if radius <= 8 else (int(radius), 5)
    offsets = torch.arange(-reach, reach + 1, dtype=like.dtype, device=like.device)
    inside = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2).to(like.dtype)
    disk = (inside / inside.sum())[None, None]
    disk = kornia.filters.gaussian_blur2d(disk, (blur_size, blur_size), (alias_blur, alias_blur),
                                          border_type="reflect")[0, 0]
    support = int((disk.abs().sum(dim=0) > 0).nonzero().max()) - reach
    return disk[reach - support:reach + support + 1, reach - support:reach + support + 1][None]


def _defocus_blur(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    radius, alias_blur = params
    return kornia.filters.filter2d(x, _disk_kernel(radius, alias_blur, x), border_type="reflect")


def _displace_locally(x: Tensor, max_delta: int, g: torch.Generator) -> Tensor:
    """The reference's pixel "swaps", bottom-right to top-left, each position with the pixel at
    an offset drawn from [-max_delta, max_delta) per axis. Written as ``x[h, w], x[h', w'] =
    x[h', w'], x[h, w]`` on numpy views of RGB pixels, each one copies the neighbour into
    (h, w) and leaves the neighbour as it was; CIFAR-10-C was made that way, and so is this
    (grey images too)."""
    batch, channels, height, width = x.shape
    rows = torch.arange(height - max_delta, max_delta, -1, device=x.device)
    cols = torch.arange(width - max_delta, max_delta, -1, device=x.device)
    offsets = torch.randint(-max_delta, max_delta, (2, batch, len(rows), len(cols)),
                            generator=g, device=x.device)
    targets = (rows[:, None] * width + cols[None, :]).flatten()  # in the reference's order
    sources = ((rows[:, None] + offsets[1]) * width + cols[None, :] + offsets[0]).view(batch, -1)
    flat = x.reshape(batch, channels, height * width).clone()
    if max_delta == 1:
        # offsets of -1 or 0 only read pixels not yet written: one gather does the whole pass
        flat[:, :, targets] = flat.gather(2, sources[:, None].expand(-1, channels, -1))
        return flat.view_as(x)
    for k, target in enumerate(targets.tolist()):  # later reads see earlier writes
        source = sources[:, k].view(batch, 1, 1).expand(-1, channels, 1)
        flat[:, :, target] = flat.gather(2, source)[:, :, 0]
    return flat.view_as(x)


def _glass_blur(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    sigma, max_delta, iterations = params
    blurred = _gaussian_filter(x, sigma, truncate=4.0, border="nearest")
    y = torch.floor(blurred * 255) / 255  # the reference stores this step as uint8
    for _ in range(iterations):
        y = _displace_locally(y, max_delta, g)
    return _gaussian_filter(y, sigma, truncate=4.0, border="nearest")


def _motion_blur(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    radius, sigma = params
    angles = _uniform((len(x),), -45.0, 45.0, g, x)
    return _motion_blur_8bit(x, angles, radius, sigma)


def _zoom_blur(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    stop, step = params
    # numpy's own float steps, so that each factor, and the sizes it rounds to, match
    factors = np.arange(1, stop, step)
    total = x.clone()
    for factor in factors:
        total = total + _zoom_crop(x, float(factor))
    return total / (len(factors) + 1)


def _snow(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    loc, scale, zoom, threshold, radius, sigma, blend = params
    flakes = loc + scale * torch.randn((len(x), 1) + x.shape[-2:], generator=g, device=x.device,
                                       dtype=x.dtype)
    flakes = _zoom_crop(flakes, zoom)
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes)
    flakes = torch.floor(flakes.clamp(0, 1) * 255) / 255  # stored as an 8-bit PNG
    angles = _uniform((len(x),), -135.0, -45.0, g, x)
    flakes = _motion_blur_8bit(flakes, angles, radius, sigma)
    whitened = blend * x + (1 - blend) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return whitened + flakes + flakes.flip(-2, -1)


_FROST_TINT = (0.81, 0.93, 1.0)  # blue-white, RGB: the reference photographs' channel ratios


def _frost_texture(x: Tensor, g: torch.Generator) -> Tensor:
    """A procedural frost layer in [0, 1], B×C×H×W: a brightness level per image, soft plasma
    haze, and short bright needles (sparse seeds smeared along a line, three random directions
    per image). Its mean, its spread across images and its detail within an image are set
    near those of 32×32 crops of the reference's frost photographs at their 0.2 scale."""
    shape = (len(x), 1) + x.shape[-2:]
    level = _uniform((len(x), 1, 1, 1), 0.3, 0.9, g, x)
    haze = _plasma_like(x, decay=2.0, g=g) - 0.5
    reach = max(2, min(x.shape[-2:]) // 8)
    distances = torch.arange(-reach, reach + 1, dtype=x.dtype, device=x.device)
    fade = 1 - distances.abs() / (reach + 1)  # needles thin out towards their tips
    needles = torch.zeros(shape, dtype=x.dtype, device=x.device)
    for _ in range(3):
        seeds = (torch.rand(shape, generator=g, device=x.device) < 0.03).to(x.dtype)
        seeds = seeds * _uniform(shape, 0.5, 1.0, g, x)
        angles = _uniform((len(x),), 0.0, 180.0, g, x)
        needles = needles + kornia.filters.filter2d(seeds, _line_kernels(angles, distances, fade),
                                                    border_type="constant")
    ice = (level + 0.25 * haze + 0.3 * needles).clamp(0, 1)
    tint = torch.tensor(_FROST_TINT, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    if x.shape[1] == 1:
        tint = _grey(tint)
    return ice * tint


def _frost(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    image_weight, frost_weight = params
    return image_weight * x + frost_weight * _frost_texture(x, g)


def _fog(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    strength, decay = params
    brightest = x.amax(dim=(1, 2, 3), keepdim=True)
    fogged = x + strength * _plasma_like(x, decay, g)
    return fogged * brightest / (brightest + strength)


def _brightness(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    (shift,) = params
    value = x.amax(dim=1, keepdim=True)  # HSV's V
    raised = (value + shift).clamp(0, 1)
    # hue and saturation fixed: RGB scales with V; a black pixel (S = 0) becomes grey V'
    return torch.where(value > 0, x * raised / value.clamp_min(1e-12), raised.expand_as(x))


def _contrast(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    (factor,) = params
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * factor + means


def _elastic_transform(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    alpha_f, sigma_f, jitter_f = params
    height, width = x.shape[-2:]
    size = min(height, width)
    alpha, sigma, jitter = alpha_f * size, sigma_f * size, jitter_f * size
    warped = _random_affine(x, jitter, g)
    field_shape = (len(x), 1, height, width)
    dx = _gaussian_filter(_uniform(field_shape, -1, 1, g, x), sigma, 3.0, "reflect") * alpha
    dy = _gaussian_filter(_uniform(field_shape, -1, 1, g, x), sigma, 3.0, "reflect") * alpha
    return _sample_symmetric(warped, dx[:, 0], dy[:, 0])


def _random_affine(x: Tensor, jitter: float, g: torch.Generator) -> Tensor:
    """The reference's random affine: three points around the centre moved by U(-jitter,
    jitter) each, the affine map through them applied with a reflect-101 border."""
    height, width = x.shape[-2:]
    cx, cy, arm = float(width // 2), float(height // 2), float(min(height, width) // 3)
    source = torch.tensor([[cx + arm, cy + arm], [cx + arm, cy - arm], [cx - arm, cy - arm]],
                          dtype=x.dtype, device=x.device).expand(len(x), 3, 2)
    target = source + _uniform((len(x), 3, 2), -jitter, jitter, g, x)
    homogeneous = torch.cat([source, torch.ones_like(source[..., :1])], dim=-1)
    matrix = torch.linalg.solve(homogeneous, target).transpose(1, 2)  # B×2×3, source→target
    return kornia.geometry.transform.warp_affine(x, matrix, (height, width),
                                                 padding_mode="reflection", align_corners=True)


def _sample_symmetric(x: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """x sampled bilinearly at (row + dy, col + dx), outside values mirrored with the edge
    repeated (scipy map_coordinates' 'reflect')."""
    height, width = x.shape[-2:]
    pad = int(math.ceil(float(torch.maximum(dx.abs().max(), dy.abs().max())))) + 1
    padded = _pad_symmetric(x, pad)
    rows = torch.arange(height, dtype=x.dtype, device=x.device).view(1, -1, 1) + dy + pad
    cols = torch.arange(width, dtype=x.dtype, device=x.device).view(1, 1, -1) + dx + pad
    grid = torch.stack([2 * cols / (padded.shape[-1] - 1) - 1,
                        2 * rows / (padded.shape[-2] - 1) - 1], dim=-1)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border",
                         align_corners=True)


def _box_weights(n_in: int, n_out: int, like: Tensor) -> Tensor:
    """Pillow's BOX resampling coefficients (``precompute_coeffs``) as an n_out×n_in matrix:
    each output averages the inputs whose centres fall in its box (a nearest pick when
    enlarging)."""
    scale = n_in / n_out
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    for out in range(n_out):
        centre = (out + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        last = min(int(centre + support + 0.5), n_in)
        for src in range(first, last):
            offset = (src - centre + 0.5) / filter_scale
            weights[out, src] = 1.0 if -0.5 < offset <= 0.5 else 0.0
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights.to(dtype=like.dtype, device=like.device)


def _resize_box_8bit(levels: Tensor, height: int, width: int) -> Tensor:
    """Pillow's BOX resize of an image of whole 0-255 levels: a horizontal then a vertical
    pass, each rounded half up to whole levels as Pillow's 8-bit passes are."""
    across = _box_weights(levels.shape[-1], width, levels)
    down = _box_weights(levels.shape[-2], height, levels)
    y = torch.floor(levels @ across.T + 0.5)
    return torch.floor(down @ y + 0.5)


def _pixelate(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    (factor,) = params
    height, width = x.shape[-2:]
    # on whole levels, so that two-pixel averages tie exactly at .5 as in Pillow
    levels = torch.round(x * 255)
    small = _resize_box_8bit(levels, int(height * factor), int(width * factor))
    return _resize_box_8bit(small, height, width) / 255


def _jpeg_compression(x: Tensor, params: Params, g: torch.Generator) -> Tensor:
    (quality,) = params
    images = torch.round(x * 255).to(torch.uint8).cpu()
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec; they still work, and
        # Pillow (the reference's codec) is the fallback once they are gone
        warnings.simplefilter("ignore", DeprecationWarning)
        # one image at a time, on the CPU
        decoded = [decode_jpeg(encode_jpeg(image, quality=quality)) for image in images]
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255


# --- the registry of names, tables and how each ends in 8 bits ------------------------------
@dataclass(frozen=True)
class _Corruption:
    apply: Callable[[Tensor, Params, torch.Generator], Tensor]
    table: tuple[Params, ...]  # severities 1-5
    # The reference's last step to 8 bits: np.uint8 truncates a float image; corruptions that
    # end in an 8-bit codec or resize (ImageMagick, Pillow, libjpeg) are already whole values.
    rounds: bool = False


_SPECS: dict[str, _Corruption] = {
    "gaussian_noise": _Corruption(_gaussian_noise, ((0.04,), (0.06,), (0.08,), (0.09,), (0.10,))),
    "shot_noise": _Corruption(_shot_noise, ((500,), (250,), (100,), (75,), (50,))),
    "impulse_noise": _Corruption(_impulse_noise, ((0.01,), (0.02,), (0.03,), (0.05,), (0.07,))),
    "defocus_blur": _Corruption(_defocus_blur, ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2),
                                                (1.5, 0.1))),
    "glass_blur": _Corruption(_glass_blur, ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1),
                                            (0.25, 1, 2), (0.4, 1, 2))),
    "motion_blur": _Corruption(_motion_blur, ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
                               rounds=True),
    # (stop, step) of the zoom factors np.arange(1, stop, step); numpy's float steps make
    # them 1.00-1.06, 1.00-1.11, 1.00-1.15, 1.00-1.20, 1.00-1.25
    "zoom_blur": _Corruption(_zoom_blur, ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01),
                                          (1.21, 0.01), (1.26, 0.01))),
    # (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
    "snow": _Corruption(_snow, ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                                (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                                (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                                (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))),
    "frost": _Corruption(_frost, ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))),
    "fog": _Corruption(_fog, ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))),
    "brightness": _Corruption(_brightness, ((0.05,), (0.1,), (0.15,), (0.2,), (0.3,))),
    "contrast": _Corruption(_contrast, ((0.75,), (0.5,), (0.4,), (0.3,), (0.15,))),
    # (alpha, sigma, affine jitter) as fractions of the image size (the reference: × 32)
    "elastic_transform": _Corruption(_elastic_transform, (
        (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03))),
    "pixelate": _Corruption(_pixelate, ((0.95,), (0.9,), (0.85,), (0.75,), (0.65,)),
                            rounds=True),
    "jpeg_compression": _Corruption(_jpeg_compression, ((80,), (65,), (58,), (50,), (40,)),
                                    rounds=True),
}

CORRUPTIONS: tuple[str, ...] = tuple(_SPECS)  # CIFAR-10-C's order
PARAMETERS: dict[str, tuple[Params, ...]] = {name: spec.table for name, spec in _SPECS.items()}


def _spec(name: str) -> _Corruption:
    if name not in _SPECS:
        raise ConfigError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    return _SPECS[name]


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"corruptions take uint8 images B×C×H×W with C 1 or 3, got "
                         f"{images.dtype} of shape {tuple(images.shape)}")


def corrupt_with(images: Tensor, name: str, params: Params, seed: int) -> Tensor:
    """``images`` (uint8 B×C×H×W) corrupted by ``name`` with an explicit parameter row (the
    layout of ``PARAMETERS[name]``'s rows), e.g. another benchmark's table."""
    spec = _spec(name)
    _check_images(images)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    y = spec.apply(images.float() / 255, tuple(params), generator).clamp(0, 1) * 255
    return (torch.round(y) if spec.rounds else torch.floor(y)).to(torch.uint8)


def corrupt(images: Tensor, name: str, severity: int, seed: int) -> Tensor:
    """``images`` (uint8 B×C×H×W, C = 1 or 3) corrupted by ``name`` at CIFAR-10-C's
    ``severity`` (1-5): a new uint8 tensor on the same device. The same batch, seed and device
    give the same result; each image of a batch gets its own random draw."""
    spec = _spec(name)
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ConfigError(f"corruption severity must be one of {SEVERITIES}, got {severity!r}")
    return corrupt_with(images, name, spec.table[severity - 1], seed)
