"""RegMixup (Pinto et al., NeurIPS 2022): mixup as a regulariser of the clean objective,

    L = CE(f(x), y) + η · CE(f(x̃), ỹ),   x̃, ỹ from mixup with λ ~ Beta(α, α), α large (20),

so the model still fits clean data while the mixed copies widen its uncertain region. The
clean and mixed batches go through one forward on their concatenation (as the authors' code
does), so BatchNorm sees both."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.methods.base import StepOutput
from mixbench.methods.sample_mixing import Mixup
from mixbench.registry import METHODS


@METHODS.register("regmixup")
class RegMixup(Mixup):
    def __init__(self, *, num_classes: int, alpha: float = 20.0, eta: float = 1.0,
                 prob: float = 1.0, lam_mode: str = "batch"):
        super().__init__(num_classes=num_classes, alpha=alpha, prob=prob, lam_mode=lam_mode)
        if not eta >= 0:
            raise ConfigError(f"method.eta (weight of the mixed loss) must be >= 0, got {eta}")
        self.eta = float(eta)

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        y = self.targets(labels, x.dtype)
        mixed = self.mix_batch(x, y)
        if isinstance(mixed.lam, float) and mixed.lam == 1.0:  # not mixed (prob): plain CE
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0})
        b = len(x)
        logits = model(torch.cat([x, mixed.x]))
        loss = loss_fn(logits[:b], y) + self.eta * loss_fn(logits[b:], mixed.y)
        # logits[:b] are the clean batch's, which the trainer's accuracy reads
        return StepOutput(loss, logits, {"lam": mixed.lam})

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, eta={self.eta})"
