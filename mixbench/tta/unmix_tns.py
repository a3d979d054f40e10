"""UnMix-TNS (Tomar et al., ICLR 2024): test-time normalisation that survives label-correlated
test streams. Each BatchNorm2d becomes K statistics components initialised around the source
statistics; every test instance is normalised with the mixture of the components, each first
mixed with the instance's own statistics by how similar the instance is to it; the components
then move toward the instances assigned to them. As the official code computes it
(``tta_experiments/unmixtns.py``; line numbers below are that file's):

    init (L38-54)   μ_k = μ + sqrt(α·K/(K−1))·σ ⊙ ε_k,  ε_k ~ N(0, I) per component and channel
                    σ²_k = (1 − α)·σ²                   (K = 1: μ_1 = μ, σ²_1 = σ²)
    forward (L77-122), per instance b with channel mean μ̃_b and (biased) variance σ̃²_b:
                    p_bk = softmax_k(cos(μ̃_b, μ_k) / 0.07)                   (no gradient)
                    μ̂_bk = (1 − p_bk)·μ_k + p_bk·μ̃_b;  σ̂²_bk likewise
                    μ̄_b = mean_k μ̂_bk;  σ̄²_b = mean_k σ̂²_bk + mean_k μ̂²_bk − μ̄²_b
                    y_b = γ·(z_b − μ̄_b)/sqrt(σ̄²_b + ε) + β
    update (L103-114, no gradient), λ = 1 − (1 − momentum)^(B / B_max):
                    μ_k += λ·mean_b p_bk·(μ̃_b − μ_k);  σ²_k += λ·mean_b p_bk·(σ̃²_b − σ²_k)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixbench.errors import ConfigError
from mixbench.tta.norms import channel_statistics

TEMPERATURE = 0.07  # hard-coded in the official code
COSINE_EPS = 1e-8  # as F.cosine_similarity's; a matrix product instead of its B×K×C broadcast


class UnMixTNS2d(nn.Module):
    """A BatchNorm2d's drop-in replacement for test time. The components live in the buffers
    ``component_means`` and ``component_vars`` (K × C)."""

    def __init__(self, num_features: int, num_components: int = 16,
                 batch_size_max: int = 64, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if num_components < 1 or batch_size_max < 1:
            raise ConfigError(f"UnMix-TNS needs num_components >= 1 and batch_size_max >= 1, "
                              f"got {num_components} and {batch_size_max}")
        self.num_components, self.batch_size_max = num_components, batch_size_max
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("component_means", torch.zeros(num_components, num_features))
        self.register_buffer("component_vars", torch.ones(num_components, num_features))

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, num_components: int = 16, batch_size_max: int = 64,
                alpha: float = 0.5, generator: torch.Generator | None = None) -> "UnMixTNS2d":
        """Components around ``bn``'s running statistics, its affine parameters shared."""
        if bn.running_mean is None or not bn.affine:
            raise ConfigError("UnMix-TNS replaces BatchNorm2d layers with running statistics "
                              "and affine parameters")
        layer = cls(bn.num_features, num_components, batch_size_max,
                    bn.momentum if bn.momentum is not None else 0.1, bn.eps)
        layer.weight, layer.bias = bn.weight, bn.bias
        mean, var = bn.running_mean.detach(), bn.running_var.detach()
        layer = layer.to(mean.device)
        if num_components == 1:
            layer.component_means.copy_(mean[None])
            layer.component_vars.copy_(var[None])
            return layer
        noise = torch.randn(num_components, bn.num_features, generator=generator,
                            device="cpu" if generator is None else generator.device)
        spread = math.sqrt(alpha * num_components / (num_components - 1))
        layer.component_means.copy_(mean + spread * var.sqrt() * noise.to(mean.device))
        layer.component_vars.copy_(((1 - alpha) * var).expand(num_components, -1))
        return layer

    def forward(self, z: Tensor) -> Tensor:
        inst_mean, inst_var = channel_statistics(z, (2, 3), unbiased=False)  # B×C each
        with torch.no_grad():
            similarity = (F.normalize(inst_mean, dim=1, eps=COSINE_EPS)
                          @ F.normalize(self.component_means, dim=1, eps=COSINE_EPS).T)  # B×K
            assign = torch.softmax(similarity / TEMPERATURE, dim=1)
        mean, var = mixture_statistics(assign, inst_mean, inst_var, self.component_means,
                                       self.component_vars)
        scale = self.weight * torch.rsqrt(var + self.eps)  # B×C: one pass over z below
        shift = self.bias - mean * scale
        out = torch.addcmul(shift[..., None, None], z, scale[..., None, None])
        self._update(assign, inst_mean.detach(), inst_var.detach(), z.shape[0])
        return out

    @torch.no_grad()
    def _update(self, assign: Tensor, inst_mean: Tensor, inst_var: Tensor, batch: int) -> None:
        """μ_k += λ·mean_b p_bk·(μ̃_b − μ_k), σ²_k likewise, as K×C matrix products."""
        rate = 1 - (1 - self.momentum) ** (batch / self.batch_size_max)
        weight = assign.sum(dim=0)[:, None]  # K×1: Σ_b p_bk
        for component, instance in ((self.component_means, inst_mean),
                                    (self.component_vars, inst_var)):
            component += (rate / batch) * (assign.T @ instance - weight * component)


def mixture_statistics(assign: Tensor, inst_mean: Tensor, inst_var: Tensor, means: Tensor,
                       variances: Tensor) -> tuple[Tensor, Tensor]:
    """μ̄_b and σ̄²_b of the module docstring without the B×K×C tensors μ̂, σ̂²: the sums over
    k expand into B×K by K×C products (Σ_k p_bk = 1). The components are centred on their
    mean first, so that E_k μ̂² − μ̄² cancels small numbers, not large ones."""
    k = means.shape[0]
    centre = means.mean(dim=0)
    centred, inst = means - centre, inst_mean - centre  # K×C, B×C
    p2 = assign * assign
    p_m, p2_m = assign @ centred, p2 @ centred  # B×C
    p_m2, p2_m2 = assign @ (centred * centred), p2 @ (centred * centred)
    mean = (inst - p_m) / k  # mean_k μ̂_bk, centred (mean_k of the centred means is 0)
    mean_var = variances.mean(dim=0) + (inst_var - assign @ variances) / k  # mean_k σ̂²_bk
    # mean_k μ̂²_bk with μ̂_bk = μ_k + p_bk·(μ̃_b − μ_k), centred
    mean_sq = ((centred * centred).sum(dim=0) + 2 * (inst * p_m - p_m2)
               + inst * inst * p2.sum(dim=1, keepdim=True) - 2 * inst * p2_m + p2_m2) / k
    return mean + centre, mean_var + mean_sq - mean * mean


def replace_bn(model: nn.Module, num_components: int = 16, batch_size_max: int = 64,
               seed: int = 0, alpha: float = 0.5) -> int:
    """Every BatchNorm2d of ``model`` replaced by UnMix-TNS in place (BatchNorm1d keeps its
    source statistics, as the official code); the number replaced. A model with no
    BatchNorm2d is refused: UnMix-TNS has nothing to replace (GroupNorm, LayerNorm)."""
    generator = torch.Generator().manual_seed(seed)
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if isinstance(child, nn.BatchNorm2d)]
    if not targets:
        raise ConfigError("UnMix-TNS replaces BatchNorm2d layers and this model has none "
                          "(GroupNorm / LayerNorm backbones: use an adapter without BN)")
    for parent, name, child in targets:
        setattr(parent, name, UnMixTNS2d.from_bn(child, num_components, batch_size_max,
                                                 alpha=alpha, generator=generator))
    return len(targets)
