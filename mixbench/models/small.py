"""A small CNN sized for 8×8 digits (and fine on 28×28 Fashion-MNIST)."""
from __future__ import annotations

from torch import nn

from mixbench.models.base import Backbone, conv_bn_relu, init_weights
from mixbench.registry import BACKBONES
from mixbench.errors import ConfigError


@BACKBONES.register("small_cnn")
def small_cnn(*, num_classes: int, in_channels: int = 1, width: int = 32,
              norm: str = "batch") -> Backbone:
    """Three conv-norm-ReLU stages (width, 2·width, 4·width), 2× max-pool after the first two:
    8×8 → 2×2 on digits, 28×28 → 7×7 on Fashion-MNIST, then global average pooling.
    ``norm``: batch | group | none."""
    if width <= 0:
        raise ConfigError(f"backbone.width must be positive, got {width}")
    model = Backbone(
        stem=nn.Sequential(conv_bn_relu(in_channels, width, norm=norm), nn.MaxPool2d(2)),
        stages=[nn.Sequential(conv_bn_relu(width, 2 * width, norm=norm), nn.MaxPool2d(2)),
                conv_bn_relu(2 * width, 4 * width, norm=norm)],
        num_features=4 * width, num_classes=num_classes,
    )
    init_weights(model)
    return model
