"""AutoMix (Liu et al., ECCV 2022): a Mix Block learns the mixing mask, bi-level with the
classifier.

Per step, with λ_c, λ_g ~ Beta(α, α) and two random pairings ``perm_c``, ``perm_g``:

1. the momentum (EMA) copy of the backbone is updated from the classifier,
   ``θ_k ← m·θ_k + (1-m)·θ`` (m: 0.999 → 0.999999 on a cosine schedule);
2. the Mix Block reads the EMA copy's feature map at ``feature_layer`` (no gradient) and
   makes a mask per pair;
3. the Mix Block is trained on ``mix_block_weight·loss(EMA(x̃_g), ỹ_g) + mask_loss_weight·
   L1 mask loss``, where x̃_g is mixed by its mask (gradients reach only the Mix Block, through
   the frozen EMA copy);
4. the classifier is trained on ``loss(f(x̃_c), ỹ_c) + clean_weight·loss(f(x), y)``, with the
   mask of x̃_c computed before step 3 and detached; when λ_c or 1-λ_c ≤ ``lam_margin`` the
   mask is the constant 1-λ_c (plain mixup), as in the authors' code. Before that, with
   probability ``mask_adjust`` (one draw per step) the mask is rescaled so that each
   sample's mean share is that of a λ (OpenMixup's ``mask_adjust``, see ``adjust_share``):
   ``mask_adjust_lam: mix_block`` takes step 3's λ_g, as OpenMixup's code does (its
   docstring means the classifier's), ``classifier`` takes λ_c.

Targets are mixed with λ (not the mask mean; the mask loss keeps the two close). The Mix
Block and the EMA copy live on the method (see ``LearnedPolicy``): evaluation uses the
classifier alone."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.methods.base import StepOutput
from mixbench.methods.policy.ema import cosine_lr, cosine_momentum, ema_copy
from mixbench.methods.policy.features import feature_channels, frozen_features
from mixbench.methods.policy.learned import (LearnedPolicy, PolicyPreview,
                                             check_mask_generator, check_policy_schedule)
from mixbench.methods.policy.mixblock import PixelMixBlock, mask_loss
from mixbench.methods.sample_mixing import mix_pairs, mix_targets
from mixbench.registry import METHODS


MASK_ADJUST_LAMS = ("mix_block", "classifier")


def adjust_share(share: torch.Tensor, lam: float, eps: float = 1e-8) -> torch.Tensor:
    """OpenMixup's ``mask_adjust`` on partner shares B×1×H×W: with the own share
    o = clamp(1 - share, eps, 1 - eps) and its per-sample mean μ, a sample with μ > λ keeps
    o·λ/μ of its own pixels, one with μ < λ takes (1 - o)·(1-λ)/(1-μ) from the partner, so
    that the mean own share is λ; others are left as they are."""
    own = (1 - share).clamp(eps, 1 - eps)
    mean = own.mean(dim=(1, 2, 3), keepdim=True)
    less_own = 1 - own * (lam / mean)
    less_partner = (1 - own) * ((1 - lam) / (1 - mean))
    return torch.where(mean > lam + eps, less_own,
                       torch.where(mean < lam - eps, less_partner, share))


@METHODS.register("automix")
class AutoMix(LearnedPolicy):
    name = "automix"
    needs = "stages"

    def __init__(self, *, num_classes: int, alpha: float = 2.0, feature_layer: int = -2,
                 momentum: float = 0.999, end_momentum: float = 0.999999,
                 mask_loss_weight: float = 0.1, mask_margin: float = 0.1,
                 lam_margin: float = 0.08, clean_weight: float = 1.0,
                 mix_block_weight: float = 1.0, lam_concat: bool = False,
                 mask_adjust: float = 0.0, mask_adjust_lam: str = "mix_block",
                 reduction: int = 2, upsample: str = "nearest", mix_block_lr: float = 0.1,
                 mix_block_min_lr: float = 0.05, mix_block_momentum: float = 0.9,
                 mix_block_weight_decay: float = 1e-4):
        super().__init__(num_classes=num_classes)
        if not 0 <= mask_adjust <= 1:
            raise ConfigError(f"method.mask_adjust is a probability in [0, 1], got {mask_adjust}")
        if mask_adjust_lam not in MASK_ADJUST_LAMS:
            raise ConfigError(f"method.mask_adjust_lam must be one of {MASK_ADJUST_LAMS}, "
                              f"got {mask_adjust_lam!r}")
        self.mask_adjust, self.mask_adjust_lam = float(mask_adjust), mask_adjust_lam
        check_mask_generator(alpha, lam_margin, upsample, reduction)
        check_policy_schedule(momentum, end_momentum, mix_block_lr, mix_block_min_lr,
                              mix_block_weight_decay, prefix="mix_block")
        for key, value in (("mask_loss_weight", mask_loss_weight), ("mask_margin", mask_margin),
                           ("clean_weight", clean_weight),
                           ("mix_block_weight", mix_block_weight)):
            if not value >= 0:
                raise ConfigError(f"method.{key} must be >= 0, got {value}")
        self.alpha, self.feature_layer = float(alpha), int(feature_layer)
        self.momentum, self.end_momentum = float(momentum), float(end_momentum)
        self.mask_loss_weight, self.mask_margin = float(mask_loss_weight), float(mask_margin)
        self.lam_margin, self.clean_weight = float(lam_margin), float(clean_weight)
        self.mix_block_weight, self.lam_concat = float(mix_block_weight), bool(lam_concat)
        self.reduction, self.upsample = reduction, upsample
        self.mix_block_lr, self.mix_block_min_lr = float(mix_block_lr), float(mix_block_min_lr)
        self.mix_block_momentum = float(mix_block_momentum)
        self.mix_block_weight_decay = float(mix_block_weight_decay)
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))

    # --- the parts ----------------------------------------------------------------------
    def build_parts(self, backbone, x):
        ema = ema_copy(backbone)  # read shapes through the copy: the classifier's BN stays
        channels = feature_channels(ema, x, self.feature_layer, self.name)
        return {"ema": ema, "mix_block": self.make_mix_block(channels)}

    def make_mix_block(self, channels: int) -> nn.Module:
        return PixelMixBlock(channels, self.reduction, self.lam_concat, self.upsample)

    def build_optimizers(self):
        return {"mix_block": torch.optim.SGD(
            self.parts["mix_block"].parameters(), lr=self.mix_block_lr,
            momentum=self.mix_block_momentum, weight_decay=self.mix_block_weight_decay)}

    def ema_features(self, x: torch.Tensor) -> torch.Tensor:
        """The EMA copy's feature map at ``feature_layer`` (no gradient)."""
        return frozen_features(self.parts["ema"], x, self.feature_layer, self.name)

    def masks(self, x: torch.Tensor, lam: float, perm: torch.Tensor,
              features: torch.Tensor | None = None) -> torch.Tensor:
        """The partner's share B×1×H×W that the Mix Block gives for (λ, perm), from the EMA
        copy's features (gradients reach the Mix Block only)."""
        features = self.ema_features(x) if features is None else features
        return self.parts["mix_block"](features, lam, perm, x.shape[-2:])

    # --- the step -----------------------------------------------------------------------
    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, y, backbone = self.image_step_inputs(model, batch)
        self.update_ema(backbone,
                        cosine_momentum(self.momentum, self.end_momentum, self.progress))
        b = len(x)
        lam_block, lam = self._beta.sample((2,)).tolist()
        perm_block = torch.randperm(b, device=x.device)
        perm = torch.randperm(b, device=x.device)

        # The classifier's mask, from the Mix Block as it is before this step's update.
        features = self.ema_features(x)  # read once for both masks
        with torch.no_grad():
            share = self.masks(x, lam, perm, features)
            if self.mask_adjust > 0 and torch.rand(()).item() < self.mask_adjust:
                share = adjust_share(share, lam_block if self.mask_adjust_lam == "mix_block"
                                     else lam)
        if min(lam, 1 - lam) <= self.lam_margin:
            share = torch.full_like(share, 1 - lam)

        block_loss = self.train_mix_block(x, y, lam_block, perm_block, loss_fn, features)

        mixed, y_mixed = mix_pairs(x, perm, share, of="partner"), mix_targets(y, perm, lam)
        if self.clean_weight > 0:
            logits = model(torch.cat([x, mixed]))  # clean first: the trainer's accuracy
            loss = self.clean_weight * loss_fn(logits[:b], y) + loss_fn(logits[b:], y_mixed)
        else:
            logits = model(mixed)
            loss = loss_fn(logits, y_mixed)
        return StepOutput(loss, logits, {"lam": lam, "mix_block_loss": block_loss})

    def train_mix_block(self, x, y, lam, perm, loss_fn, features=None) -> torch.Tensor:
        """One update of the Mix Block on the EMA copy's loss for its mixed batch."""
        share = self.masks(x, lam, perm, features)
        logits = self.parts["ema"](mix_pairs(x, perm, share, of="partner"))
        loss = self.mix_block_objective(logits, mix_targets(y, perm, lam), share, lam, loss_fn)
        for group in self.optimizers["mix_block"].param_groups:
            group["lr"] = cosine_lr(self.mix_block_lr, self.mix_block_min_lr, self.progress)
        self.update(loss, "mix_block")
        return loss.detach()

    def mix_block_objective(self, logits, targets, share, lam, loss_fn) -> torch.Tensor:
        """What the Mix Block minimises: the EMA copy's loss on its mixed batch + mask loss."""
        return (self.mix_block_weight * loss_fn(logits, targets)
                + self.mask_loss_weight * mask_loss(share, lam, self.mask_margin))

    def preview(self, model, x) -> PolicyPreview:
        self.ensure_built(model, x)
        lam = self._beta.sample().item()
        perm = torch.randperm(len(x), device=x.device)
        with torch.no_grad():
            share = self.masks(x, lam, perm)
        mixed = mix_pairs(x, perm, share, of="partner")
        return PolicyPreview(x, torch.stack([torch.arange(len(x), device=x.device), perm]),
                             torch.cat([1 - share, share], 1), mixed, [lam, 1 - lam])

    def __repr__(self) -> str:
        return (f"AutoMix(alpha={self.alpha}, feature_layer={self.feature_layer}, "
                f"momentum={self.momentum}->{self.end_momentum}, "
                f"mask_loss_weight={self.mask_loss_weight}, clean_weight={self.clean_weight}, "
                f"lam_concat={self.lam_concat}, mask_adjust={self.mask_adjust})")
