"""What the graph-cut mixers (PuzzleMix, Co-Mixup) share: the gco solver, imported when a
step first needs it, and the input-gradient saliency.

gco (the pip package ``gco-wrapper``) wraps the GCoptimization library of Boykov, Veksler
and Zabih; the official PuzzleMix and Co-Mixup code solve their labellings with its
alpha-beta swap on a grid graph, and so does mixbench."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError


def import_gco(method: str):
    """The ``gco`` module, or a ConfigError saying how to install it."""
    try:
        import gco
    except ImportError as err:
        raise ConfigError(f"method={method} solves graph cuts with gco, which is not "
                          f"installed: pip install 'mixbench[graphcut]' (the pip package "
                          f"gco-wrapper)") from err
    return gco


def input_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, *,
                   train_mode: bool, scale: float = 1.0,
                   keep_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(B×H×W saliency, clean loss): √(mean over channels of (∂ loss/∂x)²), the loss being
    ``scale``·loss_fn(model(x), y). With ``train_mode=False`` the pass runs in eval mode,
    leaving BatchNorm's statistics alone (the authors' code does so when there is no clean
    loss term). ``keep_graph`` keeps the clean loss differentiable for the parameters."""
    was_training = model.training
    model.train(train_mode)
    try:
        x_in = x.detach().requires_grad_(True)
        clean_loss = scale * loss_fn(model(x_in), y)
        (grad,) = torch.autograd.grad(clean_loss, x_in, retain_graph=keep_graph)
    finally:
        model.train(was_training)
    return grad.detach().square().mean(dim=1).sqrt(), clean_loss
