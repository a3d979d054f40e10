"""The shape every backbone shares: stem → stages → pooled features → linear head.

``forward_features`` (alias ``features``) returns pooled B×D features; ``head`` is the final
linear classifier. Exposing the stages lets representation-level methods (manifold mixup) mix
hidden states between them."""
from __future__ import annotations

import torch
from torch import nn

from mixbench.errors import ConfigError


class Backbone(nn.Module):
    def __init__(self, stem: nn.Module, stages: list[nn.Module], num_features: int,
                 num_classes: int, final: nn.Module | None = None):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.final = final if final is not None else nn.Identity()  # e.g. pre-act's last BN
        self.num_features = num_features
        self.head = nn.Linear(num_features, num_classes)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.final(h), 1), 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return self.pool(h)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden state before pooling (after ``final``): B×D×h×w for CNNs, B×D for
        the MLP. The logits are ``head`` applied to its spatial mean, so ``head.weight[k]``
        dotted with it at each position is the class activation map of class k (SnapMix),
        and its channel mean is a spatial attention map (AttentiveMix)."""
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return self.final(h)

    def forward(self, x: torch.Tensor, mix=None, mix_layer: int = 0) -> torch.Tensor:
        """Logits; with ``mix``, ``forward_mixed(x, mix, mix_layer)``. Methods call the model
        this way (not ``forward_mixed`` directly) so DDP and torch.compile wrappers see it."""
        if mix is not None:
            return self.forward_mixed(x, mix, mix_layer)
        return self.head(self.forward_features(x))

    def forward_mixed(self, x: torch.Tensor, mix, layer: int) -> torch.Tensor:
        """Forward with ``mix`` applied to the hidden state at ``layer``: 0 mixes the input,
        1 the stem's output, k > 1 the output of stage k-1. ``mix`` maps a batch of hidden
        states to the (possibly smaller) mixed batch, e.g. by pairing rows with a
        permutation; representation-level methods (manifold mixup, C-Mixup) use it."""
        if not 0 <= layer <= len(self.stages) + 1:
            raise ValueError(f"layer must be in 0..{len(self.stages) + 1}, got {layer}")
        blocks = [self.stem, *self.stages]
        h = x
        for k, block in enumerate(blocks):
            if k == layer:
                h = mix(h)
            h = block(h)
        if layer == len(blocks):
            h = mix(h)
        return self.head(self.pool(h))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs, unit BN, zero-bias linear (torchvision's ResNet init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


NORMS = ("batch", "group", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm (the default), GroupNorm (per-sample: a model trained on several processes
    then equals the single-process one, SyncBN needs no GPU) or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"backbone.norm must be one of {NORMS}, got {kind!r}")


def conv_bn_relu(cin: int, cout: int, stride: int = 1, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=norm == "none"),
                         norm_layer(norm, cout), nn.ReLU(inplace=True))
