"""Classification losses beyond soft CE: timm/DeiT-style BCE, focal loss and Decoupled Mixup.

Like every loss they take (logits B×K, soft targets B×K) - the mixed targets a method's step
produces - so they work with any input mixer without a change to ``Method.step``."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.losses.targets import as_soft_targets, one_hot
from mixbench.registry import LOSSES


def _check_smoothing(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {value}")
    return float(value)


class BinaryCrossEntropy(nn.Module):
    """One sigmoid per class against the (mixed, optionally smoothed) targets, averaged over
    batch × classes as timm's ``BinaryCrossEntropy`` (DeiT III) does. With ``target_threshold``
    a target entry becomes 1 when it exceeds the threshold and 0 otherwise, so both classes of a
    mixed pair count as present (timm's ``bce_target_thresh``)."""

    task = "classification"

    def __init__(self, label_smoothing: float = 0.0, target_threshold: float | None = None):
        super().__init__()
        self.label_smoothing = _check_smoothing(label_smoothing)
        if target_threshold is not None and not 0.0 <= target_threshold < 1.0:
            raise ConfigError(f"loss.target_threshold must be null or in [0, 1), "
                              f"got {target_threshold}")
        self.target_threshold = target_threshold

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = as_soft_targets(logits, target)
        if self.label_smoothing:  # on one-hot rows: timm's on/off values 1-ε+ε/K and ε/K
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / target.shape[-1]
        if self.target_threshold is not None:
            target = (target > self.target_threshold).float()
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), target)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, target_threshold={self.target_threshold}"


@LOSSES.register("bce")
def bce(*, label_smoothing: float = 0.0, target_threshold: float | None = None):
    return BinaryCrossEntropy(label_smoothing, target_threshold)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017) for soft targets: -Σ_k t_k (1 - p_k)^γ log p_k.
    γ = 0 is soft CE; Mukhoti et al. (2020) use γ = 3 for calibration."""

    task = "classification"

    def __init__(self, gamma: float = 3.0):
        super().__init__()
        if not gamma >= 0:
            raise ConfigError(f"loss.gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = as_soft_targets(logits, target)
        log_p = torch.log_softmax(logits.float(), dim=-1)
        weight = (1.0 - log_p.exp()).pow(self.gamma)
        return -(target * weight * log_p).sum(dim=-1).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


@LOSSES.register("focal")
def focal(*, gamma: float = 3.0) -> FocalLoss:
    return FocalLoss(gamma)


class DecoupledMixupLoss(nn.Module):
    """Decoupled Mixup (Liu et al., 2022):
    ``L = CE(z, ỹ) + η·λ_a·CE_¬b(z, a) + η·λ_b·CE_¬a(z, b)``, where CE_¬b is the cross-entropy
    of class a with the partner's logit left out of the softmax.

    The pair (a, λ_a), (b, λ_b) is read off the mixed target itself: its two largest entries.
    So the loss needs nothing but (logits, mixed targets) and works with any mixer through the
    default ``Method.step``. A row with a single non-zero class (not mixed, or both samples of
    one class) has nothing to decouple: its extra term is η·CE(z, a) on the full softmax.
    Entries beyond the top two (e.g. label smoothing inside a mixer) are left to the CE term."""

    task = "classification"

    def __init__(self, eta: float = 0.1):
        super().__init__()
        if not eta >= 0:
            raise ConfigError(f"loss.eta must be >= 0, got {eta}")
        self.eta = float(eta)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = as_soft_targets(logits, target)
        logits = logits.float()
        soft_ce = -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
        if self.eta == 0.0 or logits.shape[-1] < 2:
            return soft_ce
        weight, cls = target.topk(2, dim=-1)  # B×2: (λ_a, λ_b) and (a, b)
        mixed = weight[:, 1] > 0
        decoupled = 0.0
        for own, other in ((0, 1), (1, 0)):
            # Remove the partner's logit (only on mixed rows) before the softmax.
            hide = one_hot(cls[:, other], logits.shape[-1], torch.bool) & mixed[:, None]
            log_p = torch.log_softmax(logits.masked_fill(hide, float("-inf")), dim=-1)
            own_log_p = log_p.gather(1, cls[:, own:own + 1]).squeeze(1)
            decoupled = decoupled - weight[:, own] * own_log_p
        return soft_ce + self.eta * decoupled.mean()

    def extra_repr(self) -> str:
        return f"eta={self.eta}"


@LOSSES.register("decoupled")
def decoupled(*, eta: float = 0.1) -> DecoupledMixupLoss:
    return DecoupledMixupLoss(eta)
