"""Targets as every loss takes them: soft rows B×K, or class indices turned into such rows."""
from __future__ import annotations

import torch


def one_hot(labels: torch.Tensor, num_classes: int,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows B×K with a 1 at each label. A scatter, not ``F.one_hot``: one_hot checks the
    labels' range on the host, a device sync on every step (scatter_ still rejects an
    out-of-range label on the CPU)."""
    return torch.zeros(len(labels), num_classes, dtype=dtype,
                       device=labels.device).scatter_(1, labels.view(-1, 1), 1.0)


def as_soft_targets(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft targets B×K in float32 (class indices become one-hot rows)."""
    if not target.is_floating_point():
        target = one_hot(target, logits.shape[-1])
    if target.shape != logits.shape:
        raise ValueError(f"targets of shape {tuple(target.shape)} do not match logits "
                         f"{tuple(logits.shape)}")
    return target.float()
