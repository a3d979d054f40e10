"""Trajectory matching (MTT, Cazenavette et al. 2022) with AST's student options.

A student starts at an expert's parameters at epoch t, takes N SGD steps on the synthetic
set with a learnable learning rate, and is compared with the expert at epoch t+M. The steps
are functional (``torch.func.functional_call`` on views into one flat parameter vector, each
step a new vector), so the loss back-propagates through all N steps into the images and the
rate without copying modules."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mixbench.errors import ConfigError


def trajectory_matching_loss(student_end: torch.Tensor, start: torch.Tensor,
                             target: torch.Tensor) -> torch.Tensor:
    """‖θ̂_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖², on flat parameter vectors: 0 when the student
    lands on the target, 1 when it has not moved, and unchanged when every vector is scaled
    (MTT's extra 1/num_params cancels in the ratio and is left out, as AST does)."""
    if not student_end.shape == start.shape == target.shape or student_end.dim() != 1:
        raise ValueError(f"expected three flat parameter vectors of one length, got shapes "
                         f"{tuple(student_end.shape)}, {tuple(start.shape)}, "
                         f"{tuple(target.shape)}")
    return (student_end - target).square().sum() / (start - target).square().sum()


def flatten(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of a module's parameters: flat vector ↔ list of tensors."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, model: nn.Module) -> "ParamLayout":
        named = list(model.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(p.shape for _, p in named))

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        sizes = [math.prod(s) for s in self.shapes]
        return [part.view(shape) for part, shape in zip(flat.split(sizes), self.shapes)]

    def flat(self, state_dict: dict[str, torch.Tensor]) -> torch.Tensor:
        """The flat vector of these parameters in a (checkpoint's) state dict."""
        missing = [n for n in self.names if n not in state_dict]
        if missing:
            raise ConfigError(f"the expert's weights lack parameters {missing[:4]} of this "
                              f"backbone: train the experts with the backbone distilled for")
        return flatten([state_dict[n].float() for n in self.names])


def balanced_weight(start_epoch: int, max_start_epoch: int) -> float:
    """AST's balanced inner loss: with h = T⁺//2, CE × log₅(t − h + 8) from epoch h on and
    CE ÷ log₅(h − t + 8) before it (later starts, whose gradients are smaller, weigh more)."""
    half = max_start_epoch // 2
    if start_epoch >= half:
        return math.log(start_epoch - half + 8, 5)
    return 1.0 / math.log(half - start_epoch + 8, 5)


def perturb_weights(params: list[torch.Tensor], generator: torch.Generator,
                    scale: float = 1.0) -> list[torch.Tensor]:
    """AST's weight perturbation of the student's start: each 4-D (conv) tensor θ becomes
    θ + scale·(d/‖d‖_F) ⊙ θ with d ~ N(0, I); other tensors are left as they are."""
    out = []
    for p in params:
        if p.dim() == 4:
            d = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
            p = p + scale * d / d.norm() * p
        out.append(p)
    return out


@dataclass
class StudentOptions:
    """AST's student-side switches; all off is MTT's student."""

    momentum: float = 0.0  # b_n = μ b_{n-1} + g_n, θ_n = θ_{n-1} − α b_n (0: plain SGD)
    balanced_loss: bool = False
    intermediate: str = "off"  # off | equal | adaptive: also match θ*_{t+i} mid-way
    weight_perturb: bool = False

    def __post_init__(self):
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"protocol.student_momentum must be in [0, 1), got "
                              f"{self.momentum}")
        if self.intermediate not in ("off", "equal", "adaptive"):
            raise ConfigError(f"protocol.intermediate must be off, equal or adaptive, got "
                              f"{self.intermediate!r}")


def unroll(model: nn.Module, layout: ParamLayout, start: torch.Tensor, images: torch.Tensor,
           labels: torch.Tensor, lr: torch.Tensor, *, steps: int, batch_size: int | None = None,
           generator: torch.Generator | None = None,
           augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
           loss_weight: float = 1.0, momentum: float = 0.0,
           keep: tuple[int, ...] = ()) -> dict[int, torch.Tensor]:
    """``steps`` differentiable SGD steps of ``model``'s parameters from the flat vector
    ``start`` on (``images``, ``labels``), with learning rate ``lr`` (a tensor: it gets a
    gradient). Each step trains on a minibatch of ``batch_size`` rows (all by default; a fresh
    permutation from ``generator`` each pass over the set), augmented by ``augment``. Returns
    the flat parameters after each step in ``keep`` and after the last, by step number."""
    if steps < 1:
        raise ConfigError(f"protocol.syn_steps must be >= 1, got {steps}")
    n = len(images)
    batch_size = min(batch_size or n, n)
    # One flat vector per step, its tensors views into it (as MTT's re-parametrised module,
    # without the module): one gradient and one update per step instead of one per tensor
    # (measurably faster for small nets), and the flat vectors the loss compares come free.
    theta = start if start.requires_grad else start.detach().requires_grad_(True)
    velocity: torch.Tensor | None = None
    out, order = {}, torch.arange(n)
    for step in range(1, steps + 1):
        pos = ((step - 1) * batch_size) % n
        if pos == 0 and batch_size < n:
            order = torch.randperm(n, generator=generator)
        rows = order[pos:pos + batch_size].to(images.device)
        x, y = (images, labels) if batch_size == n else (images[rows], labels[rows])
        if augment is not None:
            x = augment(x, generator)
        logits = functional_call(model, dict(zip(layout.names, layout.split(theta))), (x,))
        loss = F.cross_entropy(logits, y)
        if loss_weight != 1.0:
            loss = loss * loss_weight
        (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
        if momentum:
            velocity = grad if velocity is None else torch.add(grad, velocity, alpha=momentum)
            grad = velocity
        theta = theta - lr * grad  # (addcmul measured 1% slower in the unroll)
        if step in keep or step == steps:
            out[step] = theta
    return out


def match_trajectory(model: nn.Module, layout: ParamLayout, trajectory: list[torch.Tensor],
                     start_epoch: int, images: torch.Tensor, labels: torch.Tensor,
                     lr: torch.Tensor, *, syn_steps: int, expert_epochs: int,
                     max_start_epoch: int, options: StudentOptions,
                     generator: torch.Generator, batch_size: int | None = None,
                     augment=None) -> torch.Tensor:
    """One distillation iteration's loss: the student from θ*_t (perturbed with AST's option)
    unrolled ``syn_steps`` steps and compared with θ*_{t+M}; with intermediate matching also
    θ̂ at steps (N//M)·i with θ*_{t+i}, i = 1..M−1 (weight 1, or i/M when adaptive)."""
    start = trajectory[start_epoch]
    target = trajectory[start_epoch + expert_epochs]
    student_start = start
    if options.weight_perturb:
        student_start = flatten(perturb_weights(layout.split(start.clone()), generator))
    middle = {}
    if options.intermediate != "off":
        every = syn_steps // expert_epochs
        middle = {every * i: i for i in range(1, expert_epochs) if every * i >= 1}
    weight = balanced_weight(start_epoch, max_start_epoch) if options.balanced_loss else 1.0
    kept = unroll(model, layout, student_start, images, labels, lr, steps=syn_steps,
                  batch_size=batch_size, generator=generator, augment=augment,
                  loss_weight=weight, momentum=options.momentum, keep=tuple(middle))
    loss = trajectory_matching_loss(kept[syn_steps], start, target)
    for step, i in middle.items():
        w = i / expert_epochs if options.intermediate == "adaptive" else 1.0
        loss = loss + w * trajectory_matching_loss(kept[step], start, trajectory[start_epoch + i])
    return loss
