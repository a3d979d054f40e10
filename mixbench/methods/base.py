"""The method interface: a method owns its training step.

``step(model, batch, loss_fn) -> StepOutput`` is what the trainer calls. The default step is
"one-hot targets → mix inputs and targets → forward → loss on the mixed targets"; input-level
mixers only implement ``mix_batch``. ``ERM`` is the method with no mixing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from mixbench.errors import CheckpointError
from mixbench.losses.targets import one_hot
from mixbench.registry import METHODS


@dataclass
class StepOutput:
    loss: torch.Tensor
    logits: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class MixResult:
    x: torch.Tensor
    y: torch.Tensor  # soft targets B×K
    # λ actually used (after box clipping): a float for one λ per batch, or a B-vector.
    lam: float | torch.Tensor
    # λ the targets were mixed with: λ itself, unless the labels use their own (label_lam).
    label_lam: float | torch.Tensor | None = None

    def __post_init__(self):
        if self.label_lam is None:
            self.label_lam = self.lam


def check_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    if y.dim() != 2 or y.shape[0] != x.shape[0] or y.shape[1] != num_classes:
        raise ValueError(f"targets must be soft labels of shape (batch={x.shape[0]}, "
                         f"num_classes={num_classes}); got {tuple(y.shape)}")
    if not y.is_floating_point():
        raise ValueError(f"targets must be floating point, got {y.dtype}")


class Method:
    """Base class and the ERM baseline: no mixing."""

    # The tasks the method is made for (the run's task checks it before anything runs), and
    # what to suggest to a user who pairs it with another.
    tasks: tuple[str, ...] = ("classification", "regression")
    task_hint: str = ""

    def __init__(self, *, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.progress = 0.0  # fraction of training done when the current epoch started

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before each epoch (0-based), e.g. for schedules that stop
        mixing after a fraction of training."""
        self.progress = epoch / epochs

    def start_step(self, old_classes: int) -> None:
        """Called by the continual protocols before each step: labels below ``old_classes``
        are the classes of earlier steps (e.g. for mixing old with new samples)."""

    def setup(self, data, train_loader) -> None:
        """Called once by the trainer before training with the DataBundle and the training
        loader, for methods that need the whole training set (e.g. C-Mixup's label kernel)."""

    def targets(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """What the loss compares with: one-hot rows B×K for class indices, or the float
        regression targets B×D as they are (mixing treats both alike)."""
        if labels.is_floating_point():
            return labels.to(dtype).view(len(labels), -1)
        return one_hot(labels, self.num_classes, dtype)

    def mix_batch(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        check_batch(x, y, self.num_classes)
        return MixResult(x, y, 1.0)

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_mixed, y_mixed) from a batch and its soft targets B×K; inputs are not modified."""
        result = self.mix_batch(x, y)
        return result.x, result.y

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
             loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> StepOutput:
        x, labels = batch[0], batch[1]  # a training batch may also carry its indices
        mixed = self.mix_batch(x, self.targets(labels, x.dtype))
        logits = model(mixed.x)
        return StepOutput(loss_fn(logits, mixed.y), logits,
                          {"lam": mixed.lam, "label_lam": mixed.label_lam})

    def eval_heads(self) -> dict[str, nn.Module]:
        """Other networks of the method that classify the test images (e.g. a momentum copy),
        by name; ``eval.top1_heads=best`` records their test top-1 each epoch too."""
        return {}

    # Methods with learnable parts or running statistics save them in checkpoints.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise CheckpointError(f"{type(self).__name__} has no state, but the checkpoint holds "
                             f"method state with keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes})"


class MethodWrapper(Method):
    """A method around another method's step (distillation from a teacher; DSA and AST's
    terms): every hook the trainer and the protocols call reaches the wrapped ``method``, its
    checkpoint state is the wrapped method's, and it fits the tasks that method fits."""

    def __init__(self, method: Method):
        super().__init__(num_classes=method.num_classes)
        self.method = method
        self.tasks, self.task_hint = method.tasks, method.task_hint

    def start_epoch(self, epoch: int, epochs: int) -> None:
        super().start_epoch(epoch, epochs)
        self.method.start_epoch(epoch, epochs)

    def start_step(self, old_classes: int) -> None:
        self.method.start_step(old_classes)

    def setup(self, data, train_loader) -> None:
        self.method.setup(data, train_loader)

    def step(self, model, batch, loss_fn) -> StepOutput:
        return self.method.step(model, batch, loss_fn)

    def state_dict(self) -> dict[str, Any]:
        return self.method.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state)


@METHODS.register("erm")
class ERM(Method):
    """Empirical risk minimisation: the no-mixing baseline (the default when no method is set).
    Class indices go to the loss as they are: every loss takes them, and cross-entropy then
    runs its fused kernel instead of a product with one-hot rows (the same gradients).
    Pair losses (retrieval) take the class indices as they are, too."""

    tasks = ("classification", "regression", "retrieval")

    def step(self, model, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        logits = model(x)
        target = self.targets(labels, x.dtype) if labels.is_floating_point() else labels
        return StepOutput(loss_fn(logits, target), logits, {"lam": 1.0, "label_lam": 1.0})
