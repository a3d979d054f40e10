"""Regression metrics, in the targets' original units, computed in float64."""
from __future__ import annotations

import torch


def regression_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """rmse, mae, mape, r2 for N×D predictions and targets (all outputs pooled; r2 is the mean
    over outputs of 1 − SS_res/SS_tot). MAPE is a fraction and skips zero targets, as the
    C-Mixup paper's code does."""
    pred = pred.detach().to("cpu", torch.float64).reshape(len(pred), -1)
    target = target.detach().to("cpu", torch.float64).reshape(len(target), -1)
    if pred.shape != target.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and targets {tuple(target.shape)} "
                         f"differ in shape")
    if len(target) == 0:
        raise ValueError("cannot compute metrics on an empty set")
    error = pred - target
    nonzero = target != 0
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    r2 = 1 - (error ** 2).sum(0) / torch.where(ss_tot > 0, ss_tot, torch.ones_like(ss_tot))
    return {
        "rmse": error.pow(2).mean().sqrt().item(),
        "mae": error.abs().mean().item(),
        "mape": (error[nonzero].abs() / target[nonzero].abs()).mean().item()
        if nonzero.any() else float("nan"),
        "r2": r2.mean().item(),
    }
