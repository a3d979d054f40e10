"""AlignMix (Venkataramanan et al., CVPR 2022): mix feature maps after aligning them with
optimal transport.

Per step, with probability ``input_prob`` plain mixup of the inputs; otherwise the last
feature maps A (image) and B (partner), seen as r = h·w spatial vectors each, are matched by
an entropic optimal-transport plan P (uniform marginals, cost ‖a_i − b_j‖², Sinkhorn with
``epsilon`` and ``sinkhorn_iters``, computed without gradient as the authors do), R = r·P.
One of the two directions is drawn per step:

    Ã  = λ·A + (1-λ)·B·Rᵀ   (the partner's features moved to the image's positions), or
    Ã' = λ·A·R + (1-λ)·B    (the image's features moved to the partner's positions),

then pooling and the head; labels λ·y_a + (1-λ)·y_b. λ ~ Beta(α, α)."""
from __future__ import annotations

import math

import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.methods.base import StepOutput
from mixbench.methods.model_access import plain_backbone
from mixbench.methods.sample_mixing import SampleMixer, mix_pairs, mix_targets
from mixbench.registry import METHODS


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """log Σ exp(x) along ``dim`` for finite x, dropping the terms more than 50 below the
    largest (each is < e⁻⁵⁰ of it: far below float32's resolution of the sum). torch's CPU exp
    takes a slow path on inputs beyond float32's range, and Sinkhorn over large feature
    distances is full of them (docs/benchmarks.md has the numbers); the values are those of
    ``torch.logsumexp``."""
    top = x.amax(dim, keepdim=True)
    return x.sub(top).clamp_min_(-50.0).exp_().sum(dim).log_().add_(top.squeeze(dim))


def sinkhorn_plan(cost: torch.Tensor, epsilon: float, iters: int,
                  tol: float | None = None) -> torch.Tensor:
    """B×r×r entropic OT plans with uniform marginals 1/r, by log-domain Sinkhorn: ``iters``
    iterations, or fewer with ``tol``, the authors' stopping rule: stop once the batch mean of
    Σ_i |f_i − f_i(previous)| is below it (one host sync per iteration)."""
    r = cost.shape[-1]
    log_marginal = -math.log(r)
    f = torch.zeros(cost.shape[:2], dtype=cost.dtype, device=cost.device)
    g = torch.zeros_like(f)
    for _ in range(iters):
        f_previous = f
        f = epsilon * (log_marginal - logsumexp((g[:, None, :] - cost) / epsilon, dim=2))
        g = epsilon * (log_marginal - logsumexp((f[:, :, None] - cost) / epsilon, dim=1))
        if tol is not None and (f - f_previous).abs().sum(1).mean().item() < tol:
            break
    return torch.exp((f[:, :, None] + g[:, None, :] - cost) / epsilon)


def align_and_mix(h: torch.Tensor, perm: torch.Tensor, lam: float, direction: int,
                  epsilon: float, iters: int, tol: float | None = None) -> torch.Tensor:
    """The aligned mix of feature maps ``h`` (B×C×h×w) with ``h[perm]``; see the module."""
    if h.dim() != 4:
        raise ConfigError(f"method=alignmix aligns spatial feature maps; this backbone's last "
                          f"hidden state has shape {tuple(h.shape)}")
    a = h.flatten(2)  # B×C×r
    b = a[perm]
    with torch.no_grad():
        af, bf = a.float(), b.float()
        cost = torch.cdist(af.transpose(1, 2), bf.transpose(1, 2)).square()  # B×r×r
        assignment = (sinkhorn_plan(cost, epsilon, iters, tol) * a.shape[-1]).to(h.dtype)
    if direction == 0:
        mixed = lam * a + (1.0 - lam) * b @ assignment.transpose(1, 2)
    else:
        mixed = lam * (a @ assignment) + (1.0 - lam) * b
    return mixed.view_as(h)


@METHODS.register("alignmix")
class AlignMix(SampleMixer):
    tasks = ("classification",)

    def __init__(self, *, num_classes: int, alpha: float = 2.0, prob: float = 1.0,
                 input_prob: float = 0.5, epsilon: float = 0.1, sinkhorn_iters: int = 100,
                 sinkhorn_tol: float | None = None):
        super().__init__(num_classes=num_classes, alpha=alpha, prob=prob)
        if not 0.0 <= input_prob <= 1.0:
            raise ConfigError(f"method.input_prob must be in [0, 1], got {input_prob}")
        if not epsilon > 0:
            raise ConfigError(f"method.epsilon (Sinkhorn entropy) must be > 0, got {epsilon}")
        if sinkhorn_iters < 1:
            raise ConfigError(f"method.sinkhorn_iters must be >= 1, got {sinkhorn_iters}")
        if sinkhorn_tol is not None and not sinkhorn_tol > 0:
            raise ConfigError(f"method.sinkhorn_tol must be > 0 (or null: always "
                              f"sinkhorn_iters iterations), got {sinkhorn_tol}")
        self.input_prob, self.epsilon = float(input_prob), float(epsilon)
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.sinkhorn_tol = None if sinkhorn_tol is None else float(sinkhorn_tol)

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        backbone = plain_backbone(model, "alignmix", "forward_mixed")
        y = self.targets(labels, x.dtype)
        lam = self.sample_lam(len(x))
        at_input = torch.rand(()).item() < self.input_prob
        direction = int(torch.randint(2, ()).item())
        if lam == 1.0:  # not mixed this time (prob)
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0})
        perm = torch.randperm(len(x), device=x.device)
        if at_input:
            logits = model(x, mix=lambda h: mix_pairs(h, perm, lam), mix_layer=0)
        else:
            logits = model(x, mix=lambda h: align_and_mix(h, perm, lam, direction, self.epsilon,
                                                         self.sinkhorn_iters, self.sinkhorn_tol),
                           mix_layer=len(backbone.stages) + 1)
        return StepOutput(loss_fn(logits, mix_targets(y, perm, lam)), logits,
                          {"lam": lam, "aligned": not at_input, "direction": direction})

    def __repr__(self) -> str:
        return (f"AlignMix(num_classes={self.num_classes}, alpha={self.alpha}, prob={self.prob}, "
                f"input_prob={self.input_prob}, epsilon={self.epsilon}, "
                f"sinkhorn_iters={self.sinkhorn_iters}, sinkhorn_tol={self.sinkhorn_tol})")
