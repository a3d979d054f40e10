"""The base of methods that own trainable modules besides the classifier.

Such a method keeps its extra modules (``self.parts``, e.g. a mask generator and an EMA copy
of the backbone) and their optimisers (``self.optimizers``) on itself, not in the model: the
trainer's optimiser, the checkpointed model and evaluation see only the classifier, so the
extra modules cost nothing at test time.

- They are built on the first ``step`` (a copy of the backbone needs the model, which
  ``setup`` does not get), on the batch's device, from a private RNG stream seeded with the
  epoch's seed: building consumes none of the global RNG, so a resumed run draws the same
  random numbers as an uninterrupted one, and every DDP rank builds the same modules.
- They are updated inside ``step`` by ``update``: gradients of their own loss w.r.t. their
  own parameters only (``torch.autograd.grad``), so the classifier's ``.grad`` is never
  touched (the trainer zeroes it after ``step`` anyway); under DDP those gradients are
  averaged over the ranks first, and an EMA copy takes rank 0's BatchNorm statistics, so the
  modules stay identical on every rank.
- ``state_dict`` holds the modules, the optimisers and ``extra_state()``; a state loaded
  before the modules exist (resuming) is applied right after they are built."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mixbench.errors import CheckpointError, ConfigError
from mixbench.methods.base import Method, check_batch
from mixbench.methods.model_access import plain_backbone, require_image_classification
from mixbench.methods.policy.ema import ema_update_

STATE_KEYS = {"parts", "optimizers", "extra"}


def check_policy_schedule(momentum: float, end_momentum: float, lr: float, min_lr: float,
                          weight_decay: float, prefix: str) -> None:
    """The EMA momentum schedule and the extra module's SGD settings."""
    if not 0 <= momentum <= end_momentum <= 1:
        raise ConfigError(f"method.momentum and method.end_momentum must satisfy "
                          f"0 <= momentum <= end_momentum <= 1, got {momentum}, {end_momentum}")
    if not 0 <= min_lr <= lr or lr <= 0:
        raise ConfigError(f"method.{prefix}_lr must be > 0 and >= method.{prefix}_min_lr >= 0, "
                          f"got {lr} and {min_lr}")
    if not weight_decay >= 0:
        raise ConfigError(f"method.{prefix}_weight_decay must be >= 0, got {weight_decay}")


UPSAMPLE_MODES = ("nearest", "bilinear")


def check_mask_generator(alpha: float, lam_margin: float, upsample: str,
                         reduction: int) -> None:
    """The options every mask-generating policy (automix, samix, adautomix) shares."""
    if not alpha > 0:
        raise ConfigError(f"method.alpha must be > 0 (Beta(alpha, alpha)), got {alpha}")
    if not 0 <= lam_margin < 0.5:
        raise ConfigError(f"method.lam_margin must be in [0, 0.5), got {lam_margin}")
    if upsample not in UPSAMPLE_MODES:
        raise ConfigError(f"method.upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
    if not (isinstance(reduction, int) and reduction >= 1):
        raise ConfigError(f"method.reduction must be a positive integer, got {reduction!r}")


@dataclass
class PolicyPreview:
    """What a learned policy made of a batch: mixed[b] = Σ_i masks[b, i] ⊙ x[sources[i, b]]."""
    x: torch.Tensor        # B×C×H×W
    sources: torch.Tensor  # N×B
    masks: torch.Tensor    # B×N×H×W, summing to 1 over N
    mixed: torch.Tensor    # B×C×H×W
    lams: list[float]      # the λ of each source


def leaf_copies(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of a module's parameters that require gradients, for
    ``torch.func.functional_call``: a loss computed with them has the module's gradients on
    the copies, so the module can be updated in place while the loss's graph stays valid for
    a later backward, and that backward never writes the module's ``.grad``."""
    return {name: p.detach().clone().requires_grad_(p.requires_grad)
            for name, p in module.named_parameters()}


def average_across_ranks(grads: list[torch.Tensor]) -> None:
    """In place: each gradient becomes its mean over the DDP ranks (a no-op in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for g in grads:
        dist.all_reduce(g)
        g.div_(world)


def broadcast_buffers_from_rank0(module: nn.Module) -> None:
    """Under DDP each rank's BatchNorm statistics drift apart between forwards (DDP re-sends
    rank 0's at the next forward); copies of them take rank 0's, as DDP does."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


class LearnedPolicy(Method):
    """Subclasses set ``name`` and ``needs`` (the backbone attribute they rely on), implement
    ``build_parts`` and ``build_optimizers``, and call ``ensure_built`` first in ``step``."""

    name = "learned_policy"
    tasks = ("classification",)
    needs = "stages"

    def __init__(self, *, num_classes: int):
        super().__init__(num_classes=num_classes)
        self.parts: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._pending: dict[str, Any] | None = None

    # --- what a subclass provides -------------------------------------------------------
    def build_parts(self, backbone: nn.Module, x: torch.Tensor) -> dict[str, nn.Module]:
        raise NotImplementedError

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def preview(self, model: nn.Module, x: torch.Tensor) -> "PolicyPreview":
        """The learned policy applied to ``x`` without training anything (for figures)."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Running values besides modules and optimisers (e.g. a step counter)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def eval_heads(self) -> dict[str, nn.Module]:
        """The momentum (EMA) copy, once built: OpenMixup evaluates it beside the classifier
        and reports the better one."""
        return {"ema": self.parts["ema"]} if "ema" in self.parts else {}

    # --- building -----------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return bool(self.parts)

    def ensure_built(self, model: nn.Module, x: torch.Tensor) -> nn.Module:
        """The plain backbone; on the first call also builds the parts and their optimisers
        and applies a state loaded from a checkpoint."""
        backbone = plain_backbone(model, self.name, needs=self.needs)
        if self.built:
            return backbone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed())  # the epoch's seed: the same on every rank
            parts = self.build_parts(backbone, x)
        self.parts = {name: part.to(x.device) for name, part in parts.items()}
        self.optimizers = self.build_optimizers()
        if self._pending is not None:
            state, self._pending = self._pending, None
            self._apply_state(state)
        return backbone

    def image_step_inputs(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor,
                                                                  nn.Module]:
        """(x, soft targets, plain backbone) of an image-classification batch, checked, with
        the parts built on first use: how a mask-generating policy's step begins."""
        x, labels = batch[0], batch[1]
        require_image_classification(x, labels, self.name)
        y = self.targets(labels, x.dtype)
        check_batch(x, y, self.num_classes)
        return x, y, self.ensure_built(model, x)

    # --- training the parts ---------------------------------------------------------------
    def update_ema(self, backbone: nn.Module, momentum: float) -> None:
        """``self.parts["ema"]`` ← EMA of the classifier, the same on every DDP rank."""
        ema_update_(self.parts["ema"], backbone, momentum)
        broadcast_buffers_from_rank0(self.parts["ema"])

    def update(self, loss: torch.Tensor, part: str,
               stand_ins: list[torch.Tensor] | None = None) -> None:
        """One optimiser step of ``self.parts[part]`` on ``loss``, touching no other
        parameter's gradient (DDP: gradients averaged over ranks before the step).
        ``stand_ins``: the part's parameters entered the loss as these copies (see
        ``leaf_copies``); the loss is then also returned to the trainer, so its graph is kept."""
        params = [p for p in self.parts[part].parameters() if p.requires_grad]
        grads = list(torch.autograd.grad(loss, params if stand_ins is None else stand_ins,
                                         allow_unused=True, retain_graph=stand_ins is not None))
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        average_across_ranks(grads)
        for p, g in zip(params, grads):
            p.grad = g
        self.optimizers[part].step()
        for p in params:
            p.grad = None

    # --- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if not self.built:  # nothing trained yet (or a loaded state still waiting)
            return dict(self._pending or {})
        return {"parts": {n: m.state_dict() for n, m in self.parts.items()},
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        unknown = set(state) - STATE_KEYS
        if unknown:
            raise CheckpointError(f"{type(self).__name__}: the checkpoint's method state has "
                                  f"unknown keys {sorted(unknown)}; it was saved by another "
                                  f"method or version")
        if self.built:
            self._apply_state(state)
        else:
            self._pending = state

    def _apply_state(self, state: dict[str, Any]) -> None:
        saved = state.get("parts", {})
        if set(saved) != set(self.parts):
            raise CheckpointError(f"{type(self).__name__}: the checkpoint holds parts "
                                  f"{sorted(saved)}, this method has {sorted(self.parts)}")
        try:
            for name, part in self.parts.items():
                part.load_state_dict(saved[name])
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"{type(self).__name__}: the method state in the checkpoint "
                                  f"does not fit this config (another backbone or method "
                                  f"settings?): {str(err)[:300]}") from err
        self.load_extra_state(state.get("extra", {}))
