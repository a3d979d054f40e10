"""The classifier head across steps: grown for new classes (old rows kept), and Weight
Aligning (Zhao et al., CVPR 2020) of the new rows to the old rows' norm."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.models.base import Backbone


def grow_head(model: nn.Module, num_classes: int) -> None:
    """Give ``model`` a head of ``num_classes`` rows that keeps the rows it had (the first
    ``num_classes`` of them, for the first step's smaller head); new rows get torch's Linear
    initialisation and a zero bias (as every mixbench head starts)."""
    if not isinstance(model, Backbone):
        raise ConfigError(f"protocol=class_incremental grows the classifier head of a mixbench "
                          f"backbone; {type(model).__name__} has none it can grow. Use one of "
                          f"resnet18/32/34/50, preactresnet18, wrn28_10, small_cnn, mlp")
    old = model.head
    if num_classes == old.out_features:
        return
    new = nn.Linear(old.in_features, num_classes, device=old.weight.device,
                    dtype=old.weight.dtype)
    kept = min(num_classes, old.out_features)
    with torch.no_grad():
        new.bias.zero_()
        new.weight[:kept] = old.weight[:kept]
        new.bias[:kept] = old.bias[:kept]
    model.head = new


def row_norms(linear: nn.Linear, n_old: int) -> tuple[float, float]:
    """The mean L2 norm of the old rows and of the new rows."""
    norms = linear.weight.detach().norm(dim=1)
    return norms[:n_old].mean().item(), norms[n_old:].mean().item()


def weight_align(linear: nn.Linear, n_old: int) -> float:
    """Scale the new rows (weights, not biases, as PyCIL) by γ = mean norm of the old rows /
    mean norm of the new rows, so that both means are equal; returns γ."""
    if not 0 < n_old < linear.out_features:
        raise ValueError(f"n_old must be in 1..{linear.out_features - 1}, got {n_old}")
    old, new = row_norms(linear, n_old)
    gamma = old / new
    with torch.no_grad():
        linear.weight[n_old:] *= gamma
    return gamma


def clip_head_weights(model: nn.Module, optimizer: torch.optim.Optimizer):
    """Keep the head's weights non-negative after every optimiser step (the WA paper's weight
    clipping; PyCIL does not clip). Returns the hook's handle."""
    def clip(*_):
        with torch.no_grad():
            model.head.weight.clamp_(min=0.0)

    return optimizer.register_step_post_hook(clip)
