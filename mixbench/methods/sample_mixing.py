"""Input-level mixers: mixup and cutmix.

Everything is a whole-batch tensor op on x's device. λ ~ Beta(α, α) is drawn on the CPU from
the global torch RNG (one number, or B numbers); the partner of sample i is ``perm[i]``.
``lam_mode=batch`` uses one λ for the batch, ``sample`` one per sample (which torchvision's v2
MixUp cannot do). ``prob`` is the chance that a batch (or, per sample, a sample) is mixed."""
from __future__ import annotations


import torch

from mixbench.methods.base import Method, MixResult, check_batch
from mixbench.registry import METHODS
from mixbench.errors import ConfigError

LAM_MODES = ("batch", "sample")


class SampleMixer(Method):
    def __init__(self, *, num_classes: int, alpha: float = 1.0, prob: float = 1.0,
                 lam_mode: str = "batch"):
        super().__init__(num_classes=num_classes)
        if not alpha > 0:
            raise ConfigError(f"method.alpha must be > 0 (Beta(alpha, alpha)), got {alpha}")
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"method.prob must be in [0, 1], got {prob}")
        if lam_mode not in LAM_MODES:
            raise ConfigError(f"method.lam_mode must be one of {LAM_MODES}, got {lam_mode!r}")
        self.alpha, self.prob, self.lam_mode = float(alpha), float(prob), lam_mode
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))

    def sample_lam(self, batch_size: int) -> float | torch.Tensor:
        """λ per batch (a float; 1.0 when the batch is not mixed) or per sample (a CPU
        B-vector; 1.0 for samples that are not mixed)."""
        if self.lam_mode == "batch":
            if self.prob < 1.0 and torch.rand(()).item() >= self.prob:
                return 1.0
            return self._beta.sample().item()
        lam = self._beta.sample((batch_size,))
        if self.prob < 1.0:
            lam = torch.where(torch.rand(batch_size) < self.prob, lam, torch.ones_like(lam))
        return lam

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, alpha={self.alpha}, "
                f"prob={self.prob}, lam_mode={self.lam_mode!r})")


def mix_targets(y: torch.Tensor, perm: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """λ·y + (1-λ)·y[perm], with λ a float or a B-vector."""
    weight = lam if isinstance(lam, float) else lam.to(y.device, y.dtype)[:, None]
    return torch.lerp(y[perm], y, weight)


@METHODS.register("mixup")
class Mixup(SampleMixer):
    """x̃ = λx + (1-λ)x[perm], ỹ = λy + (1-λ)y[perm] (Zhang et al., 2018)."""

    def mix_batch(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        check_batch(x, y, self.num_classes)
        lam = self.sample_lam(x.shape[0])
        if isinstance(lam, float) and lam == 1.0:
            return MixResult(x, y, 1.0)
        perm = torch.randperm(x.shape[0], device=x.device)
        if isinstance(lam, float):
            weight = lam
        else:
            weight = lam.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return MixResult(torch.lerp(x[perm], x, weight), mix_targets(y, perm, lam), lam)


def box_bounds(lam: torch.Tensor, height: int, width: int):
    """CutMix boxes with area ratio 1-λ, centred uniformly, clipped to the image.
    Returns (top, bottom, left, right) as int64 tensors shaped like ``lam``."""
    cut = torch.sqrt(1.0 - lam)
    cut_h, cut_w = (cut * height).long(), (cut * width).long()
    cy = torch.randint(0, height, lam.shape)
    cx = torch.randint(0, width, lam.shape)
    top, bottom = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    left, right = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    return top, bottom, left, right


@METHODS.register("cutmix")
class CutMix(SampleMixer):
    """Paste a box of area ratio 1-λ from x[perm]; λ is recomputed from the clipped box
    (Yun et al., 2019)."""

    def mix_batch(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        check_batch(x, y, self.num_classes)
        if x.dim() != 4:
            raise ValueError(f"cutmix needs image batches B×C×H×W, got shape {tuple(x.shape)}")
        b, _, h, w = x.shape
        lam = self.sample_lam(b)
        if isinstance(lam, float):
            if lam == 1.0:
                return MixResult(x, y, 1.0)
            top, bottom, left, right = (int(v) for v in box_bounds(torch.tensor(lam), h, w))
            perm = torch.randperm(b, device=x.device)
            mixed = x.clone()
            mixed[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (h * w)
            return MixResult(mixed, mix_targets(y, perm, lam), lam)
        top, bottom, left, right = (v.to(x.device) for v in box_bounds(lam, h, w))
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])  # B×H
        in_cols = (cols >= left[:, None]) & (cols < right[:, None])  # B×W
        mask = in_rows[:, :, None] & in_cols[:, None, :]  # B×H×W, True = pasted
        perm = torch.randperm(b, device=x.device)
        mixed = torch.where(mask[:, None], x[perm], x)
        lam = 1.0 - ((bottom - top) * (right - left)).to(torch.float32) / (h * w)
        return MixResult(mixed, mix_targets(y, perm, lam), lam)


