"""An MLP for tabular and windowed time-series regression (C-Mixup's tabular learner:
Linear → LeakyReLU(0.1) blocks of width 128, then a linear head)."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.models.base import Backbone
from mixbench.registry import BACKBONES


def _block(cin: int, cout: int, flatten: bool = False) -> nn.Sequential:
    layers = [nn.Flatten()] if flatten else []  # windows arrive as B×P×m
    return nn.Sequential(*layers, nn.Linear(cin, cout), nn.LeakyReLU(0.1))


class MLP(Backbone):
    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return h  # already B×D: nothing to pool


@BACKBONES.register("mlp")
def mlp(*, num_classes: int, in_channels: int, width: int = 128, depth: int = 2) -> MLP:
    """``depth`` hidden layers of ``width`` units; ``in_channels`` is the number of input
    features (the dataset supplies it). The first layer is the stem, each further one a stage,
    so manifold mixing can mix after any of them."""
    if width <= 0 or depth < 1:
        raise ConfigError(f"backbone.width must be positive and backbone.depth >= 1, got "
                          f"width={width}, depth={depth}")
    return MLP(stem=_block(in_channels, width, flatten=True),
               stages=[_block(width, width) for _ in range(depth - 1)],
               num_features=width, num_classes=num_classes)
