"""CIFAR-stem ResNets (3×3 stem, no max-pool), as OpenMixup benchmarks them: ResNet-18/34/50,
PreAct-ResNet-18 and Wide-ResNet-28-10."""
from __future__ import annotations

from torch import nn

from mixbench.models.base import Backbone, conv_bn_relu, init_weights
from mixbench.registry import BACKBONES
from mixbench.errors import ConfigError


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes))
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x):
        return nn.functional.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x):
        return nn.functional.relu(self.body(x) + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU before each conv (He et al. 2016); also the Wide-ResNet block."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(planes)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (nn.Identity() if stride == 1 and cin == planes
                         else nn.Conv2d(cin, planes, 1, stride, bias=False))

    def forward(self, x):
        out = nn.functional.relu(self.bn1(x))
        shortcut = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(nn.functional.relu(self.bn2(out))))
        return out + shortcut


def _stages(block, widths: list[int], depths: list[int], cin: int, **block_kwargs):
    stages = []
    for i, (planes, depth) in enumerate(zip(widths, depths)):
        blocks = []
        for j in range(depth):
            stride = 2 if (i > 0 and j == 0) else 1
            blocks.append(block(cin, planes, stride, **block_kwargs))
            cin = planes * block.expansion
        stages.append(nn.Sequential(*blocks))
    return stages, cin


def _resnet(block, depths, num_classes: int, in_channels: int, final_norm: bool = False):
    stem = (nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False) if final_norm
            else conv_bn_relu(in_channels, 64))
    stages, width = _stages(block, [64, 128, 256, 512], depths, 64)
    final = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True)) if final_norm else None
    model = Backbone(stem, stages, width, num_classes, final=final)
    init_weights(model)
    return model


@BACKBONES.register("resnet18")
def resnet18(*, num_classes: int, in_channels: int = 3) -> Backbone:
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels)


@BACKBONES.register("resnet32")
def resnet32(*, num_classes: int, in_channels: int = 3) -> Backbone:
    """He et al.'s CIFAR ResNet-32 (3 stages of 5 basic blocks, 16/32/64 channels), the
    backbone of PyCIL's class-incremental CIFAR-100 recipes. Shortcuts that change shape are a
    1×1 convolution with BatchNorm (option B), where PyCIL pads with zeros (option A)."""
    stem = conv_bn_relu(in_channels, 16)
    stages, width = _stages(BasicBlock, [16, 32, 64], [5, 5, 5], 16)
    model = Backbone(stem, stages, width, num_classes)
    init_weights(model)
    return model


@BACKBONES.register("resnet34")
def resnet34(*, num_classes: int, in_channels: int = 3) -> Backbone:
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels)


@BACKBONES.register("resnet50")
def resnet50(*, num_classes: int, in_channels: int = 3) -> Backbone:
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels)


@BACKBONES.register("preactresnet18")
def preactresnet18(*, num_classes: int, in_channels: int = 3) -> Backbone:
    return _resnet(PreActBlock, [2, 2, 2, 2], num_classes, in_channels, final_norm=True)


@BACKBONES.register("wrn28_10")
def wrn28_10(*, num_classes: int, in_channels: int = 3, depth: int = 28, widen_factor: int = 10,
             dropout: float = 0.0) -> Backbone:
    """Wide-ResNet (Zagoruyko & Komodakis): 3 stages of (depth-4)/6 pre-act blocks."""
    if (depth - 4) % 6 != 0:
        raise ConfigError(f"backbone.depth must be 6n+4 (e.g. 28), got {depth}")
    n = (depth - 4) // 6
    widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    stages, width = _stages(PreActBlock, widths, [n, n, n], 16, dropout=dropout)
    model = Backbone(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), stages, width, num_classes,
                     final=nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True)))
    init_weights(model)
    return model
