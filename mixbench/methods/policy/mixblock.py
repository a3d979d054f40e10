"""Mix Blocks: a pixel-wise mixing mask from a pair's feature maps and λ (AutoMix's, and
SAMix's variant ``SAMixBlock`` below).

For features ``f_a`` (the sample) and ``f_b`` (its partner) of shape C×h×w, with λ appended
as one more channel (``1-λ`` for the partner) when ``lam_concat``:

    v = W_v f_b                         (1×1 conv to one channel: the partner's content)
    P = softmax(q(f_a)ᵀ q(f_b) / √C')   (hw×hw embedded-Gaussian attention, shared 1×1 conv q)
    m_b = sigmoid(upsample(P v))        (how much of the partner each pixel takes)

and the mask is (1 - m_b, m_b): ``x̃ = (1 - m_b)·x + m_b·x[perm]``. The mask loss keeps the
partner's share near 1-λ: ``max(|1 - mean(m_b) - λ| - margin, 0)`` ("L1" in OpenMixup)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PixelMixBlock(nn.Module):
    def __init__(self, in_channels: int, reduction: int = 2, lam_concat: bool = True,
                 upsample: str = "nearest"):
        super().__init__()
        channels = in_channels + int(lam_concat)
        self.lam_concat, self.upsample = lam_concat, upsample
        self.inter_channels = max(in_channels // reduction, 1)
        self.query = nn.Conv2d(channels, self.inter_channels, 1)
        self.value = nn.Conv2d(channels, 1, 1)
        init_mask_convs(self)

    def forward(self, features: torch.Tensor, lam: float, perm: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
        """B×h×w-feature maps → the partner's share m_b, B×1×H×W in (0, 1) at ``size``."""
        f_a, f_b = features.float(), features[perm].float()
        n, _, h, w = f_a.shape
        if self.lam_concat:
            lam_map = f_a.new_full((n, 1, h, w), lam)
            f_a, f_b = torch.cat([f_a, lam_map], 1), torch.cat([f_b, 1 - lam_map], 1)
        return attended_share(self.query(f_a), self.query(f_b), self.value(f_b), size,
                              self.upsample)


def init_mask_convs(module: nn.Module) -> None:
    """The mask generators' init in the authors' code: every conv N(0, 0.01), zero bias."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)


def attended_share(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   size: tuple[int, int], upsample: str) -> torch.Tensor:
    """``sigmoid(upsample(P v))`` with ``P = softmax(qᵀk/√C')``: query and key B×C'×h×w,
    value B×1×h×w → B×1×H×W at ``size``."""
    n, channels, h, w = query.shape
    query = query.reshape(n, channels, h * w).transpose(1, 2)
    attention = torch.softmax(query @ key.reshape(n, channels, h * w) / channels ** 0.5, dim=-1)
    logits = (attention @ value.reshape(n, h * w, 1)).view(n, 1, h, w)
    return torch.sigmoid(F.interpolate(logits, size=size, mode=upsample))


class SAMixBlock(nn.Module):
    """SAMix's Mix Block (Li et al., 2021; OpenMixup's CIFAR config of ``PixelMixBlock``):

    - λ enters by scaling, not as a channel: ``f_a ← f_a·(1 + λ')``, ``f_b ← f_b·(1 + 1-λ')``
      with λ' = ``rescale_lambda(λ, lam_k)``;
    - query and key read both maps at once, ``g = [f_a; f_b]`` (2C channels, separate 1×1
      convs), so ``P = softmax(q(g)ᵀ k(g)/√C')``;
    - the value is non-linear: 1×1 conv C→C/2, BatchNorm, ReLU, 1×1 conv C/2→1 on ``f_b``;
    - the partner's share is ``sigmoid(upsample(P v))`` as in AutoMix.

    BatchNorm uses batch statistics only (the block only ever runs in training), so it keeps
    no buffers that DDP ranks could disagree on."""

    def __init__(self, in_channels: int, reduction: int = 2, lam_k: float = 0.25,
                 upsample: str = "bilinear"):
        super().__init__()
        self.lam_k, self.upsample = lam_k, upsample
        inter_channels = max(in_channels // reduction, 1)
        self.query = nn.Conv2d(2 * in_channels, inter_channels, 1)
        self.key = nn.Conv2d(2 * in_channels, inter_channels, 1)
        self.value = nn.Sequential(
            nn.Conv2d(in_channels, inter_channels, 1),
            nn.BatchNorm2d(inter_channels, track_running_stats=False), nn.ReLU(),
            nn.Conv2d(inter_channels, 1, 1))
        init_mask_convs(self)

    def forward(self, features: torch.Tensor, lam: float, perm: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
        """B×C×h×w feature maps → the partner's share m_b, B×1×H×W in (0, 1) at ``size``."""
        lam = rescale_lambda(lam, self.lam_k)
        f_a, f_b = features.float() * (1 + lam), features[perm].float() * (2 - lam)
        both = torch.cat([f_a, f_b], 1)
        return attended_share(self.query(both), self.key(both), self.value(f_b), size,
                              self.upsample)


def rescale_lambda(lam: float, k: float) -> float:
    """SAMix's λ rescaling ``(4/3·λ³ − 2λ² + (k+1)·λ) / (k + 1/3)``: through (0, 0), (½, ½)
    and (1, 1), steep at the ends and flat around ½ (slope k/(k + 1/3) there), so λ moves
    towards ½, the more so the smaller k; k → ∞ tends to λ itself, k < 0 leaves λ as it is."""
    if k < 0:
        return lam
    return (4 / 3 * lam ** 3 - 2 * lam ** 2 + (k + 1) * lam) / (k + 1 / 3)


def mask_loss(partner_share: torch.Tensor, lam: float, margin: float) -> torch.Tensor:
    """AutoMix's L1 mask loss: the partner's mean share should be 1-λ, within ``margin``."""
    return (1 - partner_share.mean() - lam).abs().sub(margin).clamp_min(0)


def mask_variance(partner_share: torch.Tensor) -> torch.Tensor:
    """The variance of the share over the batch's pixels (SAMix subtracts it, weighted, from
    the mask loss so masks do not settle on a flat 1-λ everywhere)."""
    return (partner_share - partner_share.mean()).square().mean()
