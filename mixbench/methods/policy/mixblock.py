"""AutoMix's Mix Block: a pixel-wise mixing mask from a pair's feature maps and λ.

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
        for conv in (self.query, self.value):  # the authors' init: N(0, 0.01), zero bias
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: torch.Tensor, lam: float, perm: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
        """B×h×w-feature maps → the partner's share m_b, B×1×H×W in (0, 1) at ``size``."""
        f_a, f_b = features.float(), features[perm].float()
        n, _, h, w = f_a.shape
        if self.lam_concat:
            lam_map = f_a.new_full((n, 1, h, w), lam)
            f_a, f_b = torch.cat([f_a, lam_map], 1), torch.cat([f_b, 1 - lam_map], 1)
        value = self.value(f_b).view(n, h * w, 1)
        query = self.query(f_a).view(n, self.inter_channels, h * w).transpose(1, 2)
        key = self.query(f_b).view(n, self.inter_channels, h * w)
        attention = torch.softmax(query @ key / self.inter_channels ** 0.5, dim=-1)
        logits = (attention @ value).view(n, 1, h, w)
        return torch.sigmoid(F.interpolate(logits, size=size, mode=self.upsample))


def mix_with_mask(x: torch.Tensor, perm: torch.Tensor, partner_share: torch.Tensor):
    """(1 - m)·x + m·x[perm] with m the partner's share, B×1×H×W."""
    m = partner_share.to(x.dtype)
    return x * (1 - m) + x[perm] * m


def mask_loss(partner_share: torch.Tensor, lam: float, margin: float) -> torch.Tensor:
    """AutoMix's L1 mask loss: the partner's mean share should be 1-λ, within ``margin``."""
    return (1 - partner_share.mean() - lam).abs().sub(margin).clamp_min(0)
