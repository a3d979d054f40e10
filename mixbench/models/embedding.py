"""A backbone turned into an embedding network for metric learning: the last feature map,
pooled, a linear layer to ``embedding_dim``, L2-normalised. ``forward(x, mix=fn)`` also
embeds ``fn(feature maps)``: Metrix/feature mixes there, after the last stage and before
pooling (as the official net/feature_resnet.py L45-70 mixes ResNet's layer4 output)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mixbench.errors import ConfigError

POOLINGS = ("avg", "avg+max")


class EmbeddingNet(nn.Module):
    """``backbone``: a mixbench backbone or ``backbone=timm`` (the timm model's
    ``forward_features`` gives its last feature map); its classifier is dropped.
    ``pooling``: avg, or avg+max (the sum of global average and max pooling, as the official
    Metrix ResNet-50 pools).
    ``freeze_bn``: BatchNorm layers keep their statistics and affine weights (the Metrix
    recipe on pretrained backbones)."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, *, pooling: str = "avg",
                 freeze_bn: bool = False):
        super().__init__()
        if embedding_dim < 1:
            raise ConfigError(f"protocol.embedding_dim must be positive, got {embedding_dim}")
        if pooling not in POOLINGS:
            raise ConfigError(f"protocol.pooling must be one of {POOLINGS}, got {pooling!r}")
        if hasattr(backbone, "feature_map"):  # mixbench's backbones
            backbone.head = nn.Identity()
        elif hasattr(getattr(backbone, "model", None), "reset_classifier"):  # backbone=timm
            backbone.model.reset_classifier(0)
        else:
            raise ConfigError(f"{type(backbone).__name__} exposes no feature map: use one of "
                              f"mixbench's backbones or backbone=timm")
        self.backbone = backbone
        self.pooling = pooling
        self.embedding = nn.Linear(backbone.num_features, embedding_dim)
        nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")  # feature_resnet.py L87
        nn.init.zeros_(self.embedding.bias)
        self.freeze_bn = freeze_bn
        if freeze_bn:
            for m in self.batch_norms():
                for p in m.parameters():
                    p.requires_grad_(False)

    def batch_norms(self):
        return [m for m in self.backbone.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "EmbeddingNet":
        super().train(mode)
        if self.freeze_bn:  # the trainer calls train() every epoch
            for m in self.batch_norms():
                m.eval()
        return self

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.backbone, "feature_map"):
            return self.backbone.feature_map(x)
        return self.backbone.model.forward_features(x)  # timm: the map before its pooling

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """Feature maps (B×C×h×w, or B×C from an MLP) to B×C."""
        if h.dim() == 4:
            pooled = h.mean((2, 3))
            return pooled + h.amax((2, 3)) if self.pooling == "avg+max" else pooled
        if h.dim() == 2:
            return h
        raise ConfigError(f"the backbone's feature map has shape {tuple(h.shape)}; metric "
                          f"learning needs B×C×h×w or B×C")

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features on the unit sphere of ``embedding_dim``."""
        return F.normalize(self.embedding(pooled), dim=1)

    def forward(self, x: torch.Tensor, mix=None) -> torch.Tensor:
        """Embeddings of ``x``; with ``mix`` (feature maps → mixed feature maps), those of the
        mixed maps follow, in one batch: B + M rows. ``mix`` acts along the batch only (rows
        gathered and interpolated), so under average pooling, which is linear, it is applied
        to the pooled features: the same numbers without M feature maps in memory."""
        h = self.feature_map(x)
        if mix is None:
            return self.embed(self.pool(h))
        if self.pooling == "avg" or h.dim() == 2:
            pooled = self.pool(h)
            return self.embed(torch.cat([pooled, mix(pooled)]))
        return self.embed(self.pool(torch.cat([h, mix(h)])))

    def head_parameters(self) -> list[nn.Parameter]:
        """What warm-up epochs train: the embedding layer."""
        return list(self.embedding.parameters())
