"""Distillation from the model of the previous step, around any method: the method's step
runs as usual, every forward it makes is also run through the frozen teacher, and the loss
becomes (1-λ)·(the method's loss) + λ·KD on the old classes, λ = old classes / seen classes
(PyCIL's LwF-style term of WA: the teacher's and student's old-class logits at temperature T).
A mixer therefore distils on exactly the mixed inputs it trains on."""
from __future__ import annotations


import torch
from torch import nn

from mixbench.losses.distill import soft_cross_entropy
from mixbench.methods.base import Method, MethodWrapper, StepOutput


class WithTeacher(nn.Module):
    """The model a step sees: its forwards are the student's (``module``, which unwrapping
    finds), and each also gives the KD term of the teacher's logits on the same input."""

    def __init__(self, module: nn.Module, teacher: nn.Module, old_classes: int,
                 temperature: float):
        super().__init__()
        self.module, self.teacher = module, teacher
        self.old_classes, self.temperature = old_classes, temperature
        self.terms: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        logits = self.module(x, *args, **kwargs)
        with torch.no_grad():
            old = self.teacher(x, *args, **kwargs)[:, :self.old_classes]
        self.terms.append(soft_cross_entropy(logits[:, :self.old_classes], old,
                                             self.temperature))
        return logits


class Distilled(MethodWrapper):
    """``method`` plus distillation from ``teacher`` (the previous step's model, frozen)."""

    def __init__(self, method: Method, teacher: nn.Module, old_classes: int, temperature: float):
        super().__init__(method)
        self.old_classes, self.temperature = old_classes, temperature
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = old_classes / method.num_classes

    def step(self, model, batch, loss_fn) -> StepOutput:
        watched = WithTeacher(model, self.teacher, self.old_classes, self.temperature)
        out = self.method.step(watched, batch, loss_fn)
        kd = torch.stack(watched.terms).mean()
        loss = (1.0 - self.weight) * out.loss + self.weight * kd
        return StepOutput(loss, out.logits, {**out.info, "kd": kd.detach()})

    def __repr__(self) -> str:
        return (f"Distilled({self.method!r}, old_classes={self.old_classes}, "
                f"T={self.temperature})")
