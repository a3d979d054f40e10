"""Where a learned policy reads its features: a hidden state of the (EMA copy of the)
backbone, indexed as in ``Backbone.forward_mixed``."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError


def resolve_layer(backbone: nn.Module, layer: int, method: str) -> int:
    """``layer`` as in ``Backbone.forward_mixed`` (1 = stem output, k = after stage k-1);
    negative counts from the end (-1 = the last stage's output)."""
    deepest = len(backbone.stages) + 1
    resolved = layer + deepest + 1 if layer < 0 else layer
    if not 1 <= resolved <= deepest:
        raise ConfigError(f"method.feature_layer={layer}: this backbone has feature layers "
                          f"1..{deepest} (1 = stem, k = after stage k-1) or -1..-{deepest} "
                          f"from the end (method={method})")
    return resolved


def hidden_state(backbone: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    """The output of the stem (layer 1) or of stage layer-1."""
    h = backbone.stem(x)
    for stage in backbone.stages[:layer - 1]:
        h = stage(h)
    return h


@torch.no_grad()
def frozen_features(backbone: nn.Module, x: torch.Tensor, layer: int, method: str) -> torch.Tensor:
    """``hidden_state`` at the configured ``layer`` without gradients (the EMA copy's features
    that condition a mask generator)."""
    return hidden_state(backbone, x, resolve_layer(backbone, layer, method))


def feature_channels(backbone: nn.Module, x: torch.Tensor, layer: int, method: str) -> int:
    """Channels of the spatial feature map at ``layer`` (read without gradients; pass the
    EMA copy, in eval mode, so no BN statistics move)."""
    features = frozen_features(backbone, x[:1], layer, method)
    if features.dim() != 4:
        raise ConfigError(f"method={method} needs a convolutional backbone with spatial "
                          f"feature maps; {type(backbone).__name__} gives shape "
                          f"{tuple(features.shape)} at feature_layer={layer}")
    return features.shape[1]
