"""What methods with their own step may ask of the model being trained, and the checks that
turn a wrong pairing (a timm model, regression targets, flat inputs) into a clear error.

The trainer may hand a method the backbone wrapped in DistributedDataParallel or
torch.compile, which expose only ``forward``. Every forward that gradients flow through goes
through ``model(...)`` so the wrappers see it; gradient-free reads of the backbone's parts
(class activation maps) and checks of what it offers use the plain backbone found by
``plain_backbone``."""
from __future__ import annotations

import torch
from timm.utils import unwrap_model
from torch import nn

from mixbench.errors import ConfigError

MIXBENCH_BACKBONES = "resnet18/34/50, preactresnet18, wrn28_10, small_cnn, mlp"


def plain_backbone(model: nn.Module, method: str, needs: str | None = None) -> nn.Module:
    """The backbone inside DDP / torch.compile wrappers; if ``needs`` is given it must have
    that attribute (``forward_mixed``, ``feature_map``), which mixbench's own backbones have
    and ``backbone=timm`` has not."""
    backbone = unwrap_model(model)
    if needs is not None and not hasattr(backbone, needs):
        raise ConfigError(
            f"method={method} needs a backbone that exposes its stages ({needs}); "
            f"{type(backbone).__name__} does not (backbone=timm wraps timm models whole). "
            f"Use one of mixbench's backbones: {MIXBENCH_BACKBONES}.")
    return backbone


def spatial_feature_map(backbone: nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    """``backbone.feature_map(x)``, required to be B×D×h×w."""
    fmap = backbone.feature_map(x)
    if fmap.dim() != 4:
        raise ConfigError(f"method={method} needs a convolutional backbone with a spatial "
                          f"feature map; {type(backbone).__name__} gives shape "
                          f"{tuple(fmap.shape)}")
    return fmap


def require_image_classification(x: torch.Tensor, labels: torch.Tensor, method: str) -> None:
    if x.dim() != 4:
        raise ConfigError(f"method={method} mixes image regions and needs image batches "
                          f"B×C×H×W, got shape {tuple(x.shape)}")
    if labels.is_floating_point():
        raise ConfigError(f"method={method} is for classification (integer class labels); "
                          f"this dataset has regression targets")

