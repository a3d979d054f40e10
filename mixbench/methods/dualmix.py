"""DualMix (Fan et al., 2023, "Unleashing the Potential of Data Augmentation for Online
Class-Incremental Learning"): EnMix and AdpMix on the joined stream + memory batch.

Only the paper's abstract could be read; neither its body nor code is public. What the
abstract fixes: EnMix mixes *augmented* samples and their labels together; AdpMix mixes
old-class with new-class samples and shifts the label ratio to counter the imbalance between
the few old and the many new samples. Our choices, each an option (docs/continual.md):

- the augmentation A is a random crop after zero-padding by ``augment_padding`` and a
  horizontal flip (``augment_flip``), drawn per sample;
- EnMix: λ ~ Beta(α, α) per batch, x̃ = λ·A(x) + (1-λ)·A(x)[π], ỹ likewise;
- AdpMix: every sample is paired with a random sample of the other group (old: a label below
  the step's first class; new: the rest); with λ' ~ Beta(α, α) per pair and p the share of old
  samples in the batch, x̃ = λ'·x_old + (1-λ')·x_new and the old label gets λ'^p (≥ λ': the
  fewer old samples, the more the label leans to the old class; p = 1 is plain mixup). A
  sample with no partner of the other group stays as it is;
- the loss is CE(clean) + ``enmix_weight``·CE(EnMix) + ``adpmix_weight``·CE(AdpMix), in one
  forward pass over the three batches.
Before the first step has ended there are no old classes, and AdpMix does nothing."""
from __future__ import annotations

import torch

from mixbench.data.loaders import random_crop_flip
from mixbench.errors import ConfigError
from mixbench.methods.base import Method, StepOutput
from mixbench.methods.sample_mixing import BetaSampler, check_alpha, mix_pairs, mix_targets
from mixbench.registry import METHODS


@METHODS.register("dualmix")
class DualMix(Method):
    tasks = ("classification",)

    def __init__(self, *, num_classes: int, alpha: float = 1.0, enmix: bool = True,
                 enmix_weight: float = 1.0, adpmix: bool = True, adpmix_weight: float = 1.0,
                 augment_padding: int = 2, augment_flip: bool = True):
        super().__init__(num_classes=num_classes)
        self.alpha = check_alpha("alpha", alpha)
        if enmix_weight < 0 or adpmix_weight < 0 or augment_padding < 0:
            raise ConfigError(f"method.enmix_weight, adpmix_weight and augment_padding must be "
                              f">= 0, got {enmix_weight}, {adpmix_weight}, {augment_padding}")
        self.enmix, self.adpmix = bool(enmix), bool(adpmix)
        self.enmix_weight, self.adpmix_weight = float(enmix_weight), float(adpmix_weight)
        self.augment_padding, self.augment_flip = int(augment_padding), bool(augment_flip)
        self.old_classes = 0
        self._beta = BetaSampler(self.alpha)

    def start_step(self, old_classes: int) -> None:
        self.old_classes = old_classes

    def enmix_batch(self, x: torch.Tensor, y: torch.Tensor):
        """Mixed augmented views and their mixed labels."""
        if x.dim() == 4:
            x = random_crop_flip(x, self.augment_padding, self.augment_flip)
        lam = self._beta.one()
        perm = torch.randperm(len(x), device=x.device)
        return mix_pairs(x, perm, lam), mix_targets(y, perm, lam)

    def adpmix_batch(self, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor):
        """Every sample mixed with a random sample of the other group, the label leaning to
        the old sample's class; all on the device (no host reads)."""
        old = labels < self.old_classes
        other = old[:, None] != old[None, :]  # B×B: a partner of the other group
        scores = torch.rand(len(x), len(x), device=x.device).masked_fill_(~other, -1.0)
        partner = scores.argmax(1)
        has_partner = other.any(1)
        lam = self._beta.many(len(x), x.device)  # the old sample's share of the input
        p = old.float().mean()
        # x_old / x_new of each pair: the sample itself or its partner
        lam_self = torch.where(old, lam, 1.0 - lam)
        label_self = torch.where(old, lam.pow(p), 1.0 - lam.pow(p))
        lam_self = torch.where(has_partner, lam_self, 1.0)
        label_self = torch.where(has_partner, label_self, 1.0)
        mixed = mix_pairs(x, partner, lam_self)
        return mixed, mix_targets(y, partner, label_self)

    def step(self, model, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        y = self.targets(labels, x.dtype)
        inputs, targets, weights = [x], [y], [1.0]
        if self.enmix:
            x_en, y_en = self.enmix_batch(x, y)
            inputs.append(x_en), targets.append(y_en), weights.append(self.enmix_weight)
        if self.adpmix and self.old_classes > 0:
            x_ad, y_ad = self.adpmix_batch(x, y, labels)
            inputs.append(x_ad), targets.append(y_ad), weights.append(self.adpmix_weight)
        logits = model(torch.cat(inputs))
        b = len(x)
        loss = sum(w * loss_fn(logits[i * b:(i + 1) * b], t)
                   for i, (w, t) in enumerate(zip(weights, targets)))
        return StepOutput(loss, logits, {"parts": len(inputs)})

    def __repr__(self) -> str:
        return (f"DualMix(num_classes={self.num_classes}, alpha={self.alpha}, "
                f"enmix={self.enmix}, adpmix={self.adpmix}, old_classes={self.old_classes})")
