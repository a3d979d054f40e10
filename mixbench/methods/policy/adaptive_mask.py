"""AdAutoMix's mask generator: N masks, one per source image, that sum to 1 at every pixel.

For the feature maps f_1..f_N of the N sources of each mixed sample (λ_i appended as a
channel when ``lam_concat``):

    v_i = W_v f_i                                   (1×1 conv to one channel)
    A_i = softmax(Σ_{j≠i} q(f_i)ᵀ k(f_j) / √C')     (attention of source i to the others)
    M   = softmax_i(upsample(A_i v_i))              (N masks, softmax over the sources)

and the mixed image is ``Σ_i M_i ⊙ x_i``."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mixbench.methods.policy.mixblock import init_mask_convs
from mixbench.methods.sample_mixing import host_to


class AdaptiveMaskGenerator(nn.Module):
    def __init__(self, in_channels: int, reduction: int = 2, lam_concat: bool = False,
                 upsample: str = "bilinear"):
        super().__init__()
        channels = in_channels + int(lam_concat)
        self.lam_concat, self.upsample = lam_concat, upsample
        self.inter_channels = max(in_channels // reduction, 1)
        self.query = nn.Conv2d(channels, self.inter_channels, 1)
        self.key = nn.Conv2d(channels, self.inter_channels, 1)
        self.value = nn.Conv2d(channels, 1, 1)
        init_mask_convs(self)

    def forward(self, features: torch.Tensor, lams: list[float], sources: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
        """``features`` B×C×h×w of the batch, ``sources`` N×B (row i: which sample is source
        i of each mixed sample), ``lams`` N weights → masks B×N×H×W summing to 1 over N."""
        n_src = len(lams)
        f = features.float()[sources]  # N×B×C×h×w
        _, b, _, h, w = f.shape
        if self.lam_concat:
            lam_maps = host_to(torch.tensor(lams), f).view(n_src, 1, 1, 1, 1)
            f = torch.cat([f, lam_maps.expand(n_src, b, 1, h, w)], dim=2)
        flat = f.flatten(0, 1)  # (N·B)×C×h×w
        q = self.query(flat).view(n_src, b, self.inter_channels, h * w).transpose(2, 3)
        k = self.key(flat).view(n_src, b, self.inter_channels, h * w)
        v = self.value(flat).view(n_src, b, h * w, 1)
        others = k.sum(0, keepdim=True) - k  # Σ_{j≠i} k_j: q_i·Σk_j = Σ q_i·k_j
        attention = torch.softmax(q @ others / self.inter_channels ** 0.5, dim=-1)
        logits = (attention @ v).view(n_src, b, h, w).transpose(0, 1)  # B×N×h×w
        return torch.softmax(F.interpolate(logits, size=size, mode=self.upsample), dim=1)


def mix_sources(x: torch.Tensor, sources: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Σ_i masks[:, i] ⊙ x[sources[i]] (masks B×N×H×W, or B×N×1×1 for constant weights)."""
    return torch.einsum("nbchw,bnhw->bchw", x[sources], masks.to(x.dtype).expand(
        -1, -1, *x.shape[-2:]))


def mix_source_targets(y: torch.Tensor, sources: torch.Tensor, lams: list[float]):
    """Σ_i λ_i y[sources[i]]."""
    weights = host_to(torch.tensor(lams), y).view(-1, 1, 1)
    return (y[sources] * weights).sum(0)
