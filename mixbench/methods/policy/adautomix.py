"""AdAutoMix (Qin et al., ICLR 2024, "Adversarial AutoMixup"): a generator mixes N images
with learned masks and is trained adversarially against an EMA teacher.

Per step, with λ_1..λ_N ~ Beta(α, α) normalised to sum 1 (one set per batch) and N sources
per mixed sample (source 1 is the sample itself, the others random pairings):

1. the EMA teacher is updated from the classifier (momentum 0.999 → 0.999999, cosine);
2. the generator reads the teacher's feature maps of the N sources and gives N masks that
   sum to 1 per pixel; the mixed image is Σ M_i ⊙ x_i, its target Σ λ_i y_i;
3. the generator is updated on the teacher's loss for its own mixed batch: every
   ``adv_interval``-th step adversarially, ``-β·loss(T(x̃), ỹ) + (1-β)·Σ λ_i cos(T(x̃),
   T(x_i))`` (T: the teacher's logits, β = 0.3), otherwise cooperatively, ``loss(T(x̃), ỹ)``
   as in AutoMix - the authors' code, sign of the cosine term included;
4. the classifier is trained on ``(1-r)·loss(f(x), y) + r·loss(f(Σ λ_i x_i), ỹ) +
   loss(f(x̃), ỹ)`` with r = ``mixup_ratio`` and x̃ mixed by the generator's masks from before
   step 3 (detached; constant masks λ_i when λ_1 or 1-λ_1 ≤ ``lam_margin``).

The generator and the teacher live on the method (``LearnedPolicy``): evaluation uses the
classifier alone."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mixbench.errors import ConfigError
from mixbench.methods.base import StepOutput
from mixbench.methods.policy.adaptive_mask import (AdaptiveMaskGenerator, mix_source_targets,
                                                   mix_sources)
from mixbench.methods.policy.ema import cosine_lr, cosine_momentum, ema_copy
from mixbench.methods.policy.features import feature_channels, frozen_features
from mixbench.methods.policy.learned import (LearnedPolicy, PolicyPreview,
                                             check_mask_generator, check_policy_schedule)
from mixbench.methods.sample_mixing import host_to
from mixbench.registry import METHODS


@METHODS.register("adautomix")
class AdAutoMix(LearnedPolicy):
    name = "adautomix"
    needs = "stages"

    def __init__(self, *, num_classes: int, alpha: float = 1.0, num_sources: int = 3,
                 feature_layer: int = -2, momentum: float = 0.999,
                 end_momentum: float = 0.999999, lam_margin: float = 0.03,
                 mixup_ratio: float = 0.5, beta: float = 0.3, adv_interval: int = 2,
                 lam_concat: bool = False, reduction: int = 2, upsample: str = "bilinear",
                 generator_lr: float = 0.1, generator_min_lr: float = 0.05,
                 generator_momentum: float = 0.9, generator_weight_decay: float = 1e-4):
        super().__init__(num_classes=num_classes)
        check_mask_generator(alpha, lam_margin, upsample, reduction)
        if not (isinstance(num_sources, int) and num_sources >= 2):
            raise ConfigError(f"method.num_sources (images per mixed sample) must be an "
                              f"integer >= 2, got {num_sources!r}")
        if not (isinstance(adv_interval, int) and adv_interval >= 1):
            raise ConfigError(f"method.adv_interval must be a positive integer (1: every "
                              f"generator step is adversarial), got {adv_interval!r}")
        for key, value in (("beta", beta), ("mixup_ratio", mixup_ratio)):
            if not 0 <= value <= 1:
                raise ConfigError(f"method.{key} must be in [0, 1], got {value}")
        check_policy_schedule(momentum, end_momentum, generator_lr, generator_min_lr,
                              generator_weight_decay, prefix="generator")
        self.alpha, self.num_sources = float(alpha), num_sources
        self.feature_layer = int(feature_layer)
        self.momentum, self.end_momentum = float(momentum), float(end_momentum)
        self.lam_margin, self.mixup_ratio = float(lam_margin), float(mixup_ratio)
        self.beta, self.adv_interval = float(beta), adv_interval
        self.lam_concat, self.reduction, self.upsample = bool(lam_concat), reduction, upsample
        self.generator_lr, self.generator_min_lr = float(generator_lr), float(generator_min_lr)
        self.generator_momentum = float(generator_momentum)
        self.generator_weight_decay = float(generator_weight_decay)
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))
        self.generator_steps = 0  # decides which generator step is adversarial

    # --- the parts ----------------------------------------------------------------------
    def build_parts(self, backbone, x):
        ema = ema_copy(backbone)  # read shapes through the copy: the classifier's BN stays
        channels = feature_channels(ema, x, self.feature_layer, self.name)
        return {"ema": ema, "generator": AdaptiveMaskGenerator(
            channels, self.reduction, self.lam_concat, self.upsample)}

    def build_optimizers(self):
        return {"generator": torch.optim.SGD(
            self.parts["generator"].parameters(), lr=self.generator_lr,
            momentum=self.generator_momentum, weight_decay=self.generator_weight_decay)}

    def extra_state(self) -> dict[str, Any]:
        return {"generator_steps": self.generator_steps}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.generator_steps = int(state.get("generator_steps", 0))

    def sample_sources(self, b: int, device) -> torch.Tensor:
        """N×B: row 0 the batch itself, the others random pairings."""
        return torch.stack([torch.arange(b, device=device)]
                           + [torch.randperm(b, device=device)
                              for _ in range(self.num_sources - 1)])

    def ema_features(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's feature map at ``feature_layer`` (no gradient)."""
        return frozen_features(self.parts["ema"], x, self.feature_layer, self.name)

    def masks(self, x: torch.Tensor, lams: list[float], sources: torch.Tensor,
              features: torch.Tensor | None = None) -> torch.Tensor:
        """B×N×H×W masks from the teacher's features (gradients reach the generator only)."""
        features = self.ema_features(x) if features is None else features
        return self.parts["generator"](features, lams, sources, x.shape[-2:])

    # --- the step -----------------------------------------------------------------------
    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, y, backbone = self.image_step_inputs(model, batch)
        self.update_ema(backbone,
                        cosine_momentum(self.momentum, self.end_momentum, self.progress))
        b = len(x)
        lams = self._beta.sample((self.num_sources,))
        lams = (lams / lams.sum()).tolist()
        sources_gen = self.sample_sources(b, x.device)
        sources = self.sample_sources(b, x.device)

        constant = host_to(torch.tensor(lams), x).view(1, -1, 1, 1)
        constant = constant.expand(b, -1, 1, 1)
        features = self.ema_features(x)  # read once for both sets of masks
        if min(lams[0], 1 - lams[0]) <= self.lam_margin:
            masks = constant  # plain N-way mixup, as the authors' code
        else:
            with torch.no_grad():  # the generator as it is before this step's update
                masks = self.masks(x, lams, sources, features)

        generator_loss = self.train_generator(x, y, lams, sources_gen, loss_fn, features)

        y_mixed = mix_source_targets(y, sources, lams)
        linear, generated = mix_sources(x, sources, constant), mix_sources(x, sources, masks)
        logits = model(torch.cat([x, linear, generated]))  # clean first: the trainer's accuracy
        r = self.mixup_ratio
        loss = ((1 - r) * loss_fn(logits[:b], y) + r * loss_fn(logits[b:2 * b], y_mixed)
                + loss_fn(logits[2 * b:], y_mixed))
        return StepOutput(loss, logits, {"lam": lams[0], "generator_loss": generator_loss})

    def train_generator(self, x, y, lams, sources, loss_fn, features=None) -> torch.Tensor:
        """One generator update against the EMA teacher (adversarial every adv_interval-th
        step, cooperative otherwise)."""
        teacher = self.parts["ema"]
        mixed_logits = teacher(mix_sources(x, sources, self.masks(x, lams, sources, features)))
        ce = loss_fn(mixed_logits, mix_source_targets(y, sources, lams))
        if self.generator_steps % self.adv_interval == 0:
            with torch.no_grad():
                clean_logits = teacher(x)
            similarity = sum(lam * F.cosine_similarity(mixed_logits, clean_logits[src], dim=-1)
                             for lam, src in zip(lams, sources)).mean()
            loss = -self.beta * ce + (1 - self.beta) * similarity
        else:
            loss = ce
        for group in self.optimizers["generator"].param_groups:
            group["lr"] = cosine_lr(self.generator_lr, self.generator_min_lr, self.progress)
        self.update(loss, "generator")
        self.generator_steps += 1
        return loss.detach()

    def preview(self, model, x) -> PolicyPreview:
        self.ensure_built(model, x)
        lams = self._beta.sample((self.num_sources,))
        lams = (lams / lams.sum()).tolist()
        sources = self.sample_sources(len(x), x.device)
        with torch.no_grad():
            masks = self.masks(x, lams, sources)
        return PolicyPreview(x, sources, masks, mix_sources(x, sources, masks), lams)

    def __repr__(self) -> str:
        return (f"AdAutoMix(alpha={self.alpha}, num_sources={self.num_sources}, "
                f"beta={self.beta}, adv_interval={self.adv_interval}, "
                f"mixup_ratio={self.mixup_ratio}, feature_layer={self.feature_layer})")
