"""Learning-rate schedules, stepped once per optimisation step, with linear warm-up.

Each is a LambdaLR whose factor depends only on the step index, so a resumed run continues
exactly where it stopped."""
from __future__ import annotations

import math
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from mixbench.registry import SCHEDULERS
from mixbench.errors import ConfigError


def _with_warmup(factor: Callable[[int], float], warmup_steps: int) -> Callable[[int], float]:
    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return factor(step)

    return schedule


def _check_warmup(warmup_epochs: float, epochs: int) -> None:
    if not 0 <= warmup_epochs < max(epochs, 1):
        raise ConfigError(f"scheduler.warmup_epochs must be in [0, trainer.epochs={epochs}), "
                         f"got {warmup_epochs}")


@SCHEDULERS.register("cosine")
def cosine(*, optimizer: Optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0,
           min_lr_ratio: float = 0.0) -> LambdaLR:
    """Cosine decay from the base lr to ``min_lr_ratio``·lr over the steps after warm-up."""
    _check_warmup(warmup_epochs, epochs)
    warmup = int(warmup_epochs * steps_per_epoch)
    decay_steps = max(epochs * steps_per_epoch - warmup, 1)

    def factor(step: int) -> float:
        progress = min((step - warmup) / decay_steps, 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, _with_warmup(factor, warmup))


@SCHEDULERS.register("step")
def multistep(*, optimizer: Optimizer, epochs: int, steps_per_epoch: int,
              milestones: list[int] = (100, 150), gamma: float = 0.1,
              warmup_epochs: float = 0) -> LambdaLR:
    """Multiply the lr by ``gamma`` at each milestone epoch."""
    _check_warmup(warmup_epochs, epochs)
    if not 0 < gamma <= 1:
        raise ConfigError(f"scheduler.gamma must be in (0, 1], got {gamma}")
    milestones = sorted(int(m) for m in milestones)

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        return gamma ** sum(epoch >= m for m in milestones)

    return LambdaLR(optimizer, _with_warmup(factor, int(warmup_epochs * steps_per_epoch)))


@SCHEDULERS.register("constant")
def constant(*, optimizer: Optimizer, epochs: int, steps_per_epoch: int,
             warmup_epochs: float = 0) -> LambdaLR:
    _check_warmup(warmup_epochs, epochs)
    return LambdaLR(optimizer, _with_warmup(lambda step: 1.0, int(warmup_epochs * steps_per_epoch)))
