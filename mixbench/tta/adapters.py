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
from mixbench.registry import ADAPTERS
from mixbench.tta.norms import TestTimeNorm, convert_batchnorm, require_batchnorm
from mixbench.tta.unmix_tns import UnMixTNS2d, replace_bn

NEEDS_BN = ("tbn", "alpha_bn", "ema_bn", "tent", "unmix_tns", "unmix_tns_tent")


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


def build_adapter(name: str, model: nn.Module, **options) -> Adapter:
    """``model`` (a source model, changed in place) ready to adapt on a stream: the adapter
    ``name`` of ``ADAPTERS`` with its ``options`` (an option it does not take is named)."""
    if name not in ADAPTERS:
        raise ConfigError(f"unknown adapter={name}; choose one of {', '.join(ADAPTERS.names())}")
    return ADAPTERS.build({"name": name, **options}, model=model)


def _source_model(model: nn.Module, name: str) -> nn.Module:
    if name in NEEDS_BN:
        require_batchnorm(model, name, NEEDS_BN)
    return model.eval()


@ADAPTERS.register("source")
def source(model: nn.Module, *, seed: int = 0) -> Adapter:
    """The source model as trained: the reference row."""
    return Adapter(_source_model(model, "source"), name="source")


@ADAPTERS.register("tbn")
def tbn(model: nn.Module, *, seed: int = 0) -> Adapter:
    """BatchNorm with each test batch's statistics."""
    convert_batchnorm(_source_model(model, "tbn"), "batch", 0.1)
    return Adapter(model, name="tbn")


@ADAPTERS.register("alpha_bn")
def alpha_bn(model: nn.Module, *, alpha: float = 0.1, seed: int = 0) -> Adapter:
    """α-BN: the batch's statistics mixed with the source's, weight ``alpha`` on the batch."""
    convert_batchnorm(_source_model(model, "alpha_bn"), "alpha", alpha)
    return Adapter(model, name="alpha_bn")


@ADAPTERS.register("ema_bn")
def ema_bn(model: nn.Module, *, seed: int = 0) -> Adapter:
    """Statistics as an exponential moving average over the stream."""
    convert_batchnorm(_source_model(model, "ema_bn"), "ema", 0.1)
    return Adapter(model, name="ema_bn")


@ADAPTERS.register("tent")
def tent(model: nn.Module, *, lr: float = 1e-3, steps: int = 1, seed: int = 0) -> Adapter:
    """TENT: test-batch statistics, and ``steps`` Adam steps a batch on the prediction
    entropy, over the normalisation layers' affine parameters."""
    convert_batchnorm(_source_model(model, "tent"), "batch", 0.1)
    return Adapter(model, name="tent", lr=lr, steps=steps)


@ADAPTERS.register("unmix_tns")
def unmix_tns(model: nn.Module, *, num_components: int = 16, batch_size_max: int = 64,
              init_alpha: float = 0.5, seed: int = 0) -> Adapter:
    """UnMix-TNS. ``init_alpha``: the spread of the components around the source statistics
    (0.5 as the official code; 0 puts every component at the source mean and variance)."""
    return _unmix(model, "unmix_tns", num_components, batch_size_max, init_alpha, seed)


@ADAPTERS.register("unmix_tns_tent")
def unmix_tns_tent(model: nn.Module, *, num_components: int = 16, batch_size_max: int = 64,
                   init_alpha: float = 0.5, lr: float = 1e-3, steps: int = 1,
                   seed: int = 0) -> Adapter:
    """UnMix-TNS's normalisation, with TENT's steps over its affine parameters."""
    return _unmix(model, "unmix_tns_tent", num_components, batch_size_max, init_alpha, seed,
                  lr=lr, steps=steps)


def _unmix(model, name, num_components, batch_size_max, init_alpha, seed, **tent) -> Adapter:
    if not 0.0 <= init_alpha < 1.0:
        raise ConfigError(f"adapter.init_alpha must be in [0, 1), got {init_alpha}")
    replace_bn(_source_model(model, name), num_components, batch_size_max, seed,
               alpha=init_alpha)
    return Adapter(model, name=name, **tent)
