"""Losses (registered in LOSSES). Every loss takes (outputs B×K, targets B×K) and says which
task it is for (``task``), so a classification loss never meets regression targets. Retrieval
losses (``pair.py``) take (embeddings B×D, class indices B)."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.registry import LOSSES
from mixbench.errors import ConfigError


class CrossEntropy(nn.CrossEntropyLoss):
    """torch's cross-entropy against the (mixed) soft targets B×K every method produces, or
    class indices, with optional label smoothing of the targets: t ← (1-ε)·t + ε/K. In float32
    whatever autocast made the logits."""

    task = "classification"

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(label_smoothing=float(label_smoothing))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():
            if target.shape != logits.shape:  # torch's own message speaks of multi-target
                raise ValueError(f"targets of shape {tuple(target.shape)} do not match logits "
                                 f"{tuple(logits.shape)}")
            target = target.float()
        return super().forward(logits.float(), target)


@LOSSES.register("soft_ce")
def soft_ce(*, label_smoothing: float = 0.0) -> CrossEntropy:
    return CrossEntropy(label_smoothing)


@LOSSES.register("label_smoothing")
def label_smoothing(*, label_smoothing: float = 0.1) -> CrossEntropy:
    """Soft CE with smoothing on by default (its own name so tables tell the two apart)."""
    return CrossEntropy(label_smoothing)


class MeanSquaredError(nn.Module):
    """Mean squared error on (mixed) regression targets, as C-Mixup trains."""

    task = "regression"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape != pred.shape:
            raise ValueError(f"targets of shape {tuple(target.shape)} do not match predictions "
                             f"{tuple(pred.shape)}")
        return nn.functional.mse_loss(pred.float(), target.float())


@LOSSES.register("mse")
def mse() -> MeanSquaredError:
    return MeanSquaredError()


# Registered after the classes above (bce, focal, decoupled): calibration.py imports nothing
# from here, so there is no cycle.
from mixbench.losses import calibration, pair  # noqa: E402,F401  (registration)
from mixbench.losses.calibration import (BinaryCrossEntropy, DecoupledMixupLoss,  # noqa: E402,F401
                                         FocalLoss)
