"""AST's smooth expert trajectories: a loss scale in early epochs (the paper's "clipping
loss"), a gradient penalty on the input gradient, and (in the protocol's recipe) SGD with
momentum and weight decay. ``AugmentedStep`` wraps any method's step with DSA and these
terms, so experts, and the networks that evaluate a synthetic set, train with ``+method=``."""
from __future__ import annotations


import torch
from torch import nn

from mixbench.distill.augment import DSA
from mixbench.errors import ConfigError
from mixbench.methods.base import Method, MethodWrapper, StepOutput


def loss_scale(epoch: int, start: float = 0.5, epochs: int = 10) -> float:
    """AST's factor on the loss: ``start`` at epoch 0 rising linearly to 1 at epoch ``epochs``
    (0.5, 0.55, …, 0.95 over epochs 0–9, then 1)."""
    if epoch >= epochs:
        return 1.0
    return start + (1.0 - start) * epoch / epochs


def gradient_penalty(model: nn.Module, x: torch.Tensor, weight: float = 2.0) -> torch.Tensor:
    """AST's penalty: g = ∂(Σ f(x))/∂x, then weight · mean over (b, h, w) of
    (‖g‖₂ over channels − 1)² (WGAN-GP's target norm 1). Differentiable in the parameters."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    return weight * (grad.norm(2, dim=1) - 1).square().mean()


class AugmentedStep(MethodWrapper):
    """``method``'s step on DSA-augmented inputs, its loss × ``loss_scale(epoch)`` when
    ``scale_start`` is set, plus ``gp_weight`` × the gradient penalty on the un-augmented
    batch. With neither it is ``method`` on DSA batches (MTT's experts and evaluation)."""

    def __init__(self, method: Method, dsa: DSA | None = None, *,
                 scale_start: float | None = None, scale_epochs: int = 10,
                 gp_weight: float = 0.0):
        super().__init__(method)
        if scale_start is not None and not 0 < scale_start <= 1:
            raise ConfigError(f"protocol.loss_scale_start must be in (0, 1], got {scale_start}")
        if gp_weight < 0:
            raise ConfigError(f"protocol.gp_weight must be >= 0, got {gp_weight}")
        self.dsa = dsa
        self.scale_start, self.scale_epochs, self.gp_weight = (scale_start, scale_epochs,
                                                               gp_weight)
        self.epoch = 0

    def start_epoch(self, epoch: int, epochs: int) -> None:
        super().start_epoch(epoch, epochs)
        self.epoch = epoch

    def step(self, model, batch, loss_fn) -> StepOutput:
        x = batch[0]
        if self.dsa is not None:
            x = self.dsa(x)  # the global RNG, which fit reseeds every epoch
        out = self.method.step(model, (x, *batch[1:]), loss_fn)
        loss = out.loss
        if self.scale_start is not None:
            loss = loss * loss_scale(self.epoch, self.scale_start, self.scale_epochs)
        info = dict(out.info)
        if self.gp_weight:
            penalty = gradient_penalty(model, batch[0], self.gp_weight)
            loss = loss + penalty
            info["gp"] = penalty.detach()
        return StepOutput(loss, out.logits, info)

    def __repr__(self) -> str:
        return (f"AugmentedStep({self.method!r}, dsa={self.dsa is not None}, "
                f"scale_start={self.scale_start}, gp={self.gp_weight})")
