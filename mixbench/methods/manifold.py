"""Manifold Mixup (Verma et al., ICML 2019): mixup of hidden states at a layer drawn per step.

Layers use the index of ``Backbone.forward_mixed``: 0 is the input, 1 the stem's output,
k > 1 the output of stage k-1. The paper draws from {input, after stage 1, after stage 2}
of a ResNet, which is ``layers: [0, 2, 3]`` here."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.methods.base import StepOutput
from mixbench.methods.model_access import plain_backbone
from mixbench.methods.sample_mixing import SampleMixer, mix_pairs, mix_targets
from mixbench.registry import METHODS


@METHODS.register("manifoldmix")
class ManifoldMix(SampleMixer):
    """Mix hidden states (and labels) at a layer drawn uniformly from ``layers``."""

    def __init__(self, *, num_classes: int, alpha: float = 2.0, prob: float = 1.0,
                 lam_mode: str = "batch", layers: list[int] = (0, 2, 3)):
        super().__init__(num_classes=num_classes, alpha=alpha, prob=prob, lam_mode=lam_mode)
        layers = [int(k) for k in layers]
        if not layers or min(layers) < 0:
            raise ConfigError(f"method.layers must be a non-empty list of layer indices >= 0 "
                              f"(0 = input, 1 = stem, k = after stage k-1), got {layers}")
        self.layers = layers

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        backbone = plain_backbone(model, "manifoldmix", "forward_mixed")
        deepest = len(backbone.stages) + 1
        if max(self.layers) > deepest:
            raise ConfigError(f"method.layers={self.layers}: this backbone has layers 0..{deepest}"
                              f" (0 = input, 1 = stem, k = after stage k-1)")
        y = self.targets(labels, x.dtype)
        layer = self.layers[torch.randint(len(self.layers), ()).item()]
        lam = self.sample_lam(len(x), x.device)
        if isinstance(lam, float) and lam == 1.0:  # not mixed this time (prob)
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0, "layer": layer})
        perm = torch.randperm(len(x), device=x.device)
        logits = model(x, mix=lambda h: mix_pairs(h, perm, lam), mix_layer=layer)
        return StepOutput(loss_fn(logits, mix_targets(y, perm, lam)), logits,
                          {"lam": lam, "layer": layer})

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, layers={self.layers})"
