"""The ConvNet of dataset condensation (DC, DSA, MTT): ``depth`` blocks of conv 3×3 →
instance norm → ReLU → 2×2 average pooling, then a linear readout of the flattened map."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.models.base import Backbone
from mixbench.registry import BACKBONES


class ConvNet(Backbone):
    """A ``Backbone`` whose readout flattens a ``readout``×``readout`` map (MTT's classifier
    sees every position) instead of averaging it away. It has no buffers: instance norm keeps
    no running statistics, so a functional call needs only the parameters."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], width: int, readout: int,
                 num_classes: int):
        super().__init__(stem, stages, width * readout * readout, num_classes)
        self.readout = readout

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-1] != self.readout or h.shape[-2] != self.readout:
            h = nn.functional.adaptive_avg_pool2d(h, self.readout)
        return torch.flatten(h, 1)


def _block(cin: int, cout: int) -> nn.Sequential:
    # instance norm with an affine part, as MTT writes it: GroupNorm with one channel a group
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(cout, cout),
                         nn.ReLU(inplace=True), nn.AvgPool2d(2))


@BACKBONES.register("convnet")
def convnet(*, num_classes: int, in_channels: int = 3, width: int = 128, depth: int = 3,
            readout: int = 4) -> Backbone:
    """``readout``: the side of the map the linear layer reads (4 at 32×32 with depth 3 is
    MTT's ConvNet exactly; a map of another size is average-pooled to it)."""
    for key, value in (("width", width), ("depth", depth), ("readout", readout)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"backbone.{key} must be a positive integer, got {value!r}")
    blocks = [_block(in_channels if d == 0 else width, width) for d in range(depth)]
    return ConvNet(blocks[0], blocks[1:], width, readout, num_classes)
