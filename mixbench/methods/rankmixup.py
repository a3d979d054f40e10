"""RankMixup (Noh et al., ICCV 2023): mixup for calibration through ranking, not mixed labels.

The loss is the clean loss on the raw batch plus ``weight`` × a ranking loss between the raw
batch and mixed copies of it (λ ~ Beta(α, α) and a new partner per copy):
- ``mode=mrl``: one mixed copy; its top logit should sit ``margin`` below the raw one
  (pairs of the same class are skipped);
- ``mode=mndcg``: ``num_mixed`` copies; 1 − NDCG of the confidences ordered by max(λ, 1−λ).
The raw batch and its mixed copies go through the model in one forward pass: one forward per
step keeps DDP's gradient hooks simple. (The authors use two passes, raw then mixed, so there
BatchNorm normalises the two groups separately.)"""
from __future__ import annotations

import torch

from mixbench.errors import ConfigError
from mixbench.losses.ranking import mixup_ndcg_loss, mixup_ranking_loss
from mixbench.methods.base import Method, StepOutput
from mixbench.methods.sample_mixing import Mixup
from mixbench.registry import METHODS

MODES = ("mrl", "mndcg")


@METHODS.register("rankmixup")
class RankMixup(Method):
    tasks = ("classification",)

    def __init__(self, *, num_classes: int, mode: str = "mrl", weight: float = 0.1,
                 margin: float = 2.0, alpha: float = 2.0, num_mixed: int = 3):
        super().__init__(num_classes=num_classes)
        if mode not in MODES:
            raise ConfigError(f"method.mode must be one of {MODES}, got {mode!r}")
        if not weight >= 0:
            raise ConfigError(f"method.weight must be >= 0, got {weight}")
        if not margin >= 0:
            raise ConfigError(f"method.margin must be >= 0, got {margin}")
        if not (isinstance(num_mixed, int) and num_mixed >= 1):
            raise ConfigError(f"method.num_mixed must be a positive integer, got {num_mixed!r}")
        self.mode, self.weight, self.margin = mode, float(weight), float(margin)
        self.num_mixed = num_mixed if mode == "mndcg" else 1
        self.mixer = Mixup(num_classes=num_classes, alpha=alpha)  # validates alpha

    def step(self, model, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        y = self.targets(labels, x.dtype)
        copies = [self.mixer.mix_batch(x, y) for _ in range(self.num_mixed)]
        out = model(torch.cat([x, *(c.x for c in copies)]))
        logits, mixed_logits = out[:len(x)], out[len(x):]
        mixed_y = torch.cat([c.y for c in copies])
        if self.mode == "mrl":
            different = mixed_y.max(dim=1).values < 1.0  # a same-class pair keeps a 1 in its row
            rank = mixup_ranking_loss(logits, mixed_logits, self.margin, different)
        else:
            relevance = mixed_y.max(dim=1).values.view(self.num_mixed, -1)  # max(λ, 1−λ)
            rank = mixup_ndcg_loss(logits, mixed_logits.view(self.num_mixed, len(x), -1),
                                   relevance)
        loss = loss_fn(logits, y) + self.weight * rank
        return StepOutput(loss, logits, {"lam": [c.lam for c in copies],
                                         "rank_loss": rank.detach()})

    def __repr__(self) -> str:
        return (f"RankMixup(mode={self.mode!r}, weight={self.weight}, margin={self.margin}, "
                f"alpha={self.mixer.alpha}, num_mixed={self.num_mixed})")
