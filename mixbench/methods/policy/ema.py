"""The exponential moving average (momentum) copy of a backbone, and its momentum schedule."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def ema_copy(backbone: nn.Module) -> nn.Module:
    """A frozen copy in eval mode: it uses (and never updates) the running BN statistics, so
    reading features from it changes nothing, and gradients only flow through its input."""
    return copy.deepcopy(backbone).eval().requires_grad_(False)


@torch.no_grad()
def ema_update_(ema: nn.Module, online: nn.Module, momentum: float) -> None:
    """ema ← m·ema + (1-m)·online for every parameter; buffers (BN running statistics,
    counters) are copied, since the online network's are already running averages. One
    multi-tensor op each (a few kernels per step on a GPU instead of one per tensor)."""
    ema_params, online_params = list(ema.parameters()), list(online.parameters())
    torch._foreach_lerp_(ema_params, [p.detach().to(e.dtype)
                                      for e, p in zip(ema_params, online_params)],
                         1.0 - momentum)
    torch._foreach_copy_(list(ema.buffers()), list(online.buffers()))


def cosine_momentum(base: float, end: float, progress: float, warmup: float = 0.1) -> float:
    """Momentum rising from ``base`` to ``end`` along a half cosine over training, held at
    ``base`` for the first ``warmup`` fraction (OpenMixup's CosineScheduleHook for AutoMix:
    0.999 → 0.999999, adjust_scope [0.1, 1])."""
    if progress <= warmup:
        return base
    t = (progress - warmup) / (1.0 - warmup)
    return end - (end - base) * (math.cos(math.pi * t) + 1.0) / 2.0


def cosine_lr(base: float, floor: float, progress: float) -> float:
    """Learning rate from ``base`` down to ``floor`` along a half cosine over training."""
    return floor + (base - floor) * (math.cos(math.pi * progress) + 1.0) / 2.0
