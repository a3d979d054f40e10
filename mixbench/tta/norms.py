"""BatchNorm at test time without a gradient: which statistics normalise a test batch.

* ``batch`` (TBN): the test batch's own statistics, as train-mode BatchNorm computes them
  (biased variance), without touching the running statistics.
* ``alpha`` (α-BN): (1 − α)·source + α·batch statistics (the test-time-adaptation toolbox's
  ``bn.py``, α = 0.1; it takes the batch variance unbiased, as BatchNorm's running update does).
* ``ema`` (EMA-BN): the running statistics first move toward the batch's by BatchNorm's
  momentum, then normalise the batch (the toolbox's ``EMABatchNorm``).

Each BatchNorm layer (1d and 2d) is replaced by a ``TestTimeNorm`` holding a copy of its
source statistics and sharing its affine parameters, so TENT can train them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mixbench.errors import ConfigError

MODES = ("batch", "alpha", "ema")


def channel_statistics(x: Tensor, dims, unbiased: bool) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``x`` over ``dims`` in two passes (the mean, then the mean of the
    centred squares): torch's fused variance over several dimensions is 2-9x slower on the
    CPU for activation-sized tensors."""
    mean = x.mean(dim=dims, keepdim=True)
    count = x.numel() // mean.numel()
    var = (x - mean).square().sum(dim=dims) / (count - 1 if unbiased else count)
    return mean.squeeze(dims), var


class TestTimeNorm(nn.Module):
    __test__ = False  # not a pytest class

    def __init__(self, bn: _BatchNorm, mode: str, alpha: float = 0.1):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"unknown test-time norm mode {mode!r}: choose {', '.join(MODES)}")
        if bn.running_mean is None:
            raise ConfigError("test-time BatchNorm needs the source model's running "
                              "statistics (this BatchNorm layer was trained without them)")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"adapter.alpha must be in [0, 1], got {alpha}")
        self.mode, self.alpha, self.eps = mode, alpha, bn.eps
        self.momentum = bn.momentum if bn.momentum is not None else 0.1
        self.weight, self.bias = bn.weight, bn.bias  # shared: TENT trains them
        self.register_buffer("source_mean", bn.running_mean.detach().clone())
        self.register_buffer("source_var", bn.running_var.detach().clone())
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "batch":
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        with torch.no_grad():
            mean, var = channel_statistics(x, (0, *range(2, x.dim())), unbiased=True)
            if self.mode == "alpha":
                mean = (1 - self.alpha) * self.source_mean + self.alpha * mean
                var = (1 - self.alpha) * self.source_var + self.alpha * var
            else:  # ema: update first, then normalise with the updated statistics
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
                mean, var = self.running_mean, self.running_var
        return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.source_mean.numel()}, mode={self.mode}, alpha={self.alpha}"


def batchnorm_layers(model: nn.Module) -> list[tuple[nn.Module, str, _BatchNorm]]:
    """(parent, attribute, layer) for every BatchNorm of ``model``."""
    return [(parent, name, child) for parent in model.modules()
            for name, child in parent.named_children() if isinstance(child, _BatchNorm)]


def require_batchnorm(model: nn.Module, adapter: str, needs_bn: tuple[str, ...]) -> None:
    """Refuse a model without BatchNorm for an adapter that works through it."""
    if not batchnorm_layers(model):
        raise ConfigError(f"adapter={adapter} adapts BatchNorm statistics and this model has "
                          f"no BatchNorm layer (GroupNorm / LayerNorm backbone). The adapters "
                          f"that need BatchNorm: {', '.join(needs_bn)}; use adapter=source "
                          f"for such a model, or train the source with BatchNorm "
                          f"(e.g. backbone.norm=batch)")


def convert_batchnorm(model: nn.Module, mode: str, alpha: float = 0.1) -> int:
    """Replace every BatchNorm of ``model`` by a ``TestTimeNorm`` in place; the number
    replaced."""
    layers = batchnorm_layers(model)
    for parent, name, bn in layers:
        setattr(parent, name, TestTimeNorm(bn, mode, alpha))
    return len(layers)
