"""Test-time adapters: a source model, changed in place, that predicts each test batch of a
stream in order (and may adapt on it first).

==================  =============================================================================
``source``          no adaptation: the model in eval mode
``tbn``             BatchNorm normalises with the test batch's statistics
``alpha_bn``        (1 − α)·source + α·test statistics, α = 0.1
``ema_bn``          running statistics updated by every test batch (BatchNorm's momentum)
``tent``            TENT (Wang et al., ICLR 2021): test-batch statistics, and one Adam step per
                    batch on the entropy of the predictions, BatchNorm's affine parameters only
``unmix_tns``       UnMix-TNS layers (``mixbench.tta.unmix_tns``); BatchNorm1d keeps source stats
``unmix_tns_tent``  UnMix-TNS layers, and TENT's step on their affine parameters
==================  =============================================================================

TENT predicts a batch with the parameters it had before that batch's step (as its official
code returns the outputs of the forward it adapts on)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mixbench.errors import ConfigError
from mixbench.tta.norms import TestTimeNorm, convert_batchnorm, require_batchnorm
from mixbench.tta.unmix_tns import UnMixTNS2d, replace_bn

NORM_MODES = {"tbn": "batch", "alpha_bn": "alpha", "ema_bn": "ema", "tent": "batch"}
ADAPTERS = ("source", "tbn", "alpha_bn", "ema_bn", "tent", "unmix_tns", "unmix_tns_tent")
NEEDS_BN = ADAPTERS[1:]


def entropy(logits: Tensor) -> Tensor:
    """The Shannon entropy of each row's softmax."""
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


class Adapter:
    """Call it on each test batch in stream order; it returns the batch's logits."""

    def __init__(self, model: nn.Module, *, name: str, lr: float = 1e-3, steps: int = 1):
        self.model, self.name = model, name
        self.optimizer = None
        if name in ("tent", "unmix_tns_tent"):
            if steps < 1:
                raise ConfigError(f"adapter.steps must be at least 1, got {steps}")
            self.steps = steps
            self.optimizer = torch.optim.Adam(affine_parameters(model), lr=lr,
                                              betas=(0.9, 0.999), weight_decay=0.0)

    def __call__(self, x: Tensor) -> Tensor:
        if self.optimizer is None:
            with torch.no_grad():
                return self.model(x)
        logits = None
        for _ in range(self.steps):
            out = self.model(x)
            logits = out.detach() if logits is None else logits
            loss = entropy(out).mean()
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return logits


def affine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The affine weights and biases of the model's normalisation layers, the only
    parameters TENT trains; every other parameter is frozen."""
    norms = [m for m in model.modules() if isinstance(m, (TestTimeNorm, UnMixTNS2d))]
    chosen = {id(p): p for m in norms for p in (m.weight, m.bias) if p is not None}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    if not chosen:
        raise ConfigError("TENT trains the affine parameters of BatchNorm layers and this model "
                          "has none with affine parameters")
    return list(chosen.values())


def build_adapter(name: str, model: nn.Module, *, alpha: float = 0.1, lr: float = 1e-3,
                  steps: int = 1, num_components: int = 16, batch_size_max: int = 64,
                  init_alpha: float = 0.5, seed: int = 0) -> Adapter:
    """``model`` (a source model, changed in place) ready to adapt on a stream.
    ``init_alpha``: UnMix-TNS's spread of the components around the source statistics (0.5
    as the official code; 0 puts every component at the source mean and variance)."""
    if name not in ADAPTERS:
        raise ConfigError(f"unknown adapter={name}; choose one of {', '.join(ADAPTERS)}")
    if name != "source":
        require_batchnorm(model, name, NEEDS_BN)
    model.eval()
    if name in NORM_MODES:
        convert_batchnorm(model, NORM_MODES[name], alpha)
    elif name.startswith("unmix_tns"):
        if not 0.0 <= init_alpha < 1.0:
            raise ConfigError(f"adapter.init_alpha must be in [0, 1), got {init_alpha}")
        replace_bn(model, num_components, batch_size_max, seed, alpha=init_alpha)
    return Adapter(model, name=name, lr=lr, steps=steps)
