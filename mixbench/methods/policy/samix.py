"""SAMix (Li et al., "Boosting Discriminative Visual Representation Learning with
Scenario-Agnostic Mixup", 2021), supervised: AutoMix's bi-level scheme with three changes to
the Mix Block's side (the classifier's step is AutoMix's):

1. the Mix Block is ``SAMixBlock``: λ scales the features (with SAMix's λ rescaling), query
   and key read the pair's maps together, the value is a small non-linear network;
2. its classification loss is the η-balanced mixup loss (``eta_balanced_cross_entropy``):
   mixup CE split into a local term (how the two mixed classes share their probability) and
   a global term (how much the pair gets against every other class), the global one
   weighted by η. The default η = 1 (plain mixup CE) is what OpenMixup's code computes: its
   η (``neg_weight=0.5``) weights soft CE's terms of the classes whose target is 0, which
   are 0; the paper's η = 0.5 acts here when set;
3. its mask loss subtracts ``mask_variance_weight``·(variance of the mask) from the L1 term
   ("L1+Variance"), so masks do not flatten to a constant 1-λ.

``mask_adjust`` defaults to 0.25, OpenMixup's SAMix CIFAR value ("0.25 for CIFAR")."""
from __future__ import annotations

import inspect

import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.losses.targets import as_soft_targets
from mixbench.methods.policy.automix import AutoMix
from mixbench.methods.policy.mixblock import SAMixBlock, mask_loss, mask_variance
from mixbench.registry import METHODS


def eta_balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                               eta: float) -> torch.Tensor:
    """SAMix's η-balanced mixup loss. With S the classes the target gives weight (the mixed
    pair) and P_S = Σ_{k∈S} p_k, soft cross-entropy splits exactly into

        −Σ_k y_k log p_k = −Σ_{k∈S} y_k log(p_k / P_S)  +  (Σ_k y_k)·(−log P_S)
                            └─ local: within the pair ─┘    └─ global: pair vs the rest ─┘

    and the loss is local + η·global, averaged over the batch: η = 1 is soft CE, η = 0 only
    asks the two mixed classes to share their probability as λ says. A one-class target has
    a zero local term. (Label smoothing puts every class in S, which leaves no global term.)"""
    target = as_soft_targets(logits, target).float()
    log_p = torch.log_softmax(logits.float(), dim=-1)
    log_p_pair = torch.logsumexp(log_p.masked_fill(target <= 0, float("-inf")), dim=-1)
    local = -(target * (log_p - log_p_pair[:, None])).sum(dim=-1)
    return (local - eta * target.sum(dim=-1) * log_p_pair).mean()


@METHODS.register("samix")
class SAMix(AutoMix):
    name = "samix"

    def __init__(self, *, eta: float = 1.0, lam_k: float = 0.25,
                 mask_variance_weight: float = 2.0, upsample: str = "bilinear",
                 mask_adjust: float = 0.25, **automix):
        if "lam_concat" in automix:
            raise ConfigError("method.lam_concat is AutoMix's; SAMix's Mix Block takes λ by "
                              "scaling the features (method.lam_k), so drop the key")
        shared = set(inspect.signature(AutoMix.__init__).parameters) - {"self", "lam_concat"}
        unknown = set(automix) - shared
        if unknown:
            raise ConfigError(f"method 'samix' has no option(s) {sorted(unknown)}. Its options "
                              f"are: eta, lam_k, mask_variance_weight, upsample, "
                              f"{', '.join(sorted(shared - {'num_classes', 'upsample'}))}")
        super().__init__(upsample=upsample, lam_concat=False, mask_adjust=mask_adjust,
                         **automix)
        if not eta >= 0:
            raise ConfigError(f"method.eta must be >= 0 (η-balanced loss), got {eta}")
        if not (lam_k == -1 or 0 <= lam_k <= 10):
            raise ConfigError(f"method.lam_k must be in [0, 10] or -1 (no λ rescaling), "
                              f"got {lam_k}")
        if not mask_variance_weight >= 0:
            raise ConfigError(f"method.mask_variance_weight must be >= 0, "
                              f"got {mask_variance_weight}")
        self.eta, self.lam_k = float(eta), float(lam_k)
        self.mask_variance_weight = float(mask_variance_weight)

    def make_mix_block(self, channels: int) -> nn.Module:
        return SAMixBlock(channels, self.reduction, self.lam_k, self.upsample)

    def mix_block_objective(self, logits, targets, share, lam, loss_fn) -> torch.Tensor:
        """η-balanced loss of the EMA copy on its mixed batch + the L1+Variance mask loss
        (the run's ``loss`` is the classifier's alone)."""
        return (self.mix_block_weight * eta_balanced_cross_entropy(logits, targets, self.eta)
                + self.mask_loss_weight * (mask_loss(share, lam, self.mask_margin)
                                           - self.mask_variance_weight * mask_variance(share)))

    def __repr__(self) -> str:
        return (f"SAMix(alpha={self.alpha}, feature_layer={self.feature_layer}, eta={self.eta}, "
                f"lam_k={self.lam_k}, mask_loss_weight={self.mask_loss_weight}, "
                f"mask_variance_weight={self.mask_variance_weight}, "
                f"mask_adjust={self.mask_adjust})")
