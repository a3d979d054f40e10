"""Learning-rate schedules, stepped once per optimisation step, with linear warm-up.

Each is a LambdaLR whose factor depends only on the step index, so a resumed run continues
exactly where it stopped. ``min_lr`` is an absolute floor (mmcv's ``min_lr``, which OpenMixup's
configs set): each parameter group's factor is floored at ``min_lr / its base lr``."""
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


def _floor_ratios(optimizer: Optimizer, min_lr: float | None, scheduler: str) -> list[float]:
    """Per parameter group, ``min_lr`` as a fraction of the group's base lr (0: no floor)."""
    if min_lr is None:
        return [0.0] * len(optimizer.param_groups)
    ratios = []
    for group in optimizer.param_groups:
        base = group.get("initial_lr", group["lr"])
        if not 0 <= min_lr <= base:
            raise ConfigError(f"scheduler.min_lr={min_lr} must be in [0, the optimiser's lr "
                              f"{base}] for scheduler={scheduler}; lower it, or set "
                              f"scheduler.min_lr=null for no floor")
        ratios.append(min_lr / base if base > 0 else 0.0)
    return ratios


@SCHEDULERS.register("cosine")
def cosine(*, optimizer: Optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0,
           min_lr_ratio: float = 0.0, min_lr: float | None = None,
           by_epoch: bool = False) -> LambdaLR:
    """Cosine decay from the base lr to ``min_lr_ratio``·lr (or to the absolute ``min_lr``)
    over the steps after warm-up. ``by_epoch``: the lr changes once per epoch, as mmcv's
    ``CosineAnnealing`` by default (epoch e of E at progress e/E), instead of every step."""
    _check_warmup(warmup_epochs, epochs)
    if min_lr is not None and min_lr_ratio:
        raise ConfigError("scheduler.min_lr and scheduler.min_lr_ratio are two ways to set "
                          "the same floor: set one, and the other to null / 0")
    if by_epoch and warmup_epochs:
        raise ConfigError("scheduler.by_epoch=true has no warm-up here: set "
                          "scheduler.warmup_epochs=0 or scheduler.by_epoch=false")
    warmup = int(warmup_epochs * steps_per_epoch)
    decay_steps = max(epochs * steps_per_epoch - warmup, 1)
    floors = _floor_ratios(optimizer, min_lr, "cosine") if min_lr is not None \
        else [min_lr_ratio] * len(optimizer.param_groups)

    def progress_at(step: int) -> float:
        if by_epoch:
            return min(step // steps_per_epoch / epochs, 1.0)
        return min((step - warmup) / decay_steps, 1.0)

    def schedule(floor: float) -> Callable[[int], float]:
        def factor(step: int) -> float:
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress_at(step)))

        return _with_warmup(factor, warmup)

    return LambdaLR(optimizer, [schedule(floor) for floor in floors])


@SCHEDULERS.register("step")
def multistep(*, optimizer: Optimizer, epochs: int, steps_per_epoch: int,
              milestones: list[int] = (100, 150), gamma: float = 0.1,
              warmup_epochs: float = 0, min_lr: float | None = None) -> LambdaLR:
    """Multiply the lr by ``gamma`` at each milestone epoch, never below ``min_lr``."""
    _check_warmup(warmup_epochs, epochs)
    if not 0 < gamma <= 1:
        raise ConfigError(f"scheduler.gamma must be in (0, 1], got {gamma}")
    milestones = sorted(int(m) for m in milestones)

    def schedule(floor: float) -> Callable[[int], float]:
        def factor(step: int) -> float:
            epoch = step // steps_per_epoch
            return max(gamma ** sum(epoch >= m for m in milestones), floor)

        return _with_warmup(factor, int(warmup_epochs * steps_per_epoch))

    return LambdaLR(optimizer, [schedule(f) for f in _floor_ratios(optimizer, min_lr, "step")])


@SCHEDULERS.register("constant")
def constant(*, optimizer: Optimizer, epochs: int, steps_per_epoch: int,
             warmup_epochs: float = 0, min_lr: float | None = None) -> LambdaLR:
    """The base lr throughout (after warm-up); a ``min_lr`` floor (e.g. a method's) is only
    checked: the lr never falls to it."""
    _check_warmup(warmup_epochs, epochs)
    _floor_ratios(optimizer, min_lr, "constant")
    return LambdaLR(optimizer, _with_warmup(lambda step: 1.0, int(warmup_epochs * steps_per_epoch)))
