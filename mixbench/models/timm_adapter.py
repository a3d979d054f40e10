"""Any timm model as a mixbench backbone (``backbone=timm backbone.model_name=...``).

Weights are never downloaded: ``pretrained`` is always False; load your own weights with
``backbone.checkpoint=PATH`` (read with ``weights_only=True``)."""
from __future__ import annotations

import timm
import torch
from torch import nn

from mixbench.registry import BACKBONES
from mixbench.errors import ConfigError


class TimmBackbone(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_features = model.num_features

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features B×D, what ``head`` sees (as ``Backbone.features``)."""
        return self.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@BACKBONES.register("timm")
def timm_backbone(*, num_classes: int, in_channels: int = 3, model_name: str = "resnet18",
                  checkpoint: str | None = None, model_kwargs: dict | None = None) -> TimmBackbone:
    if model_name not in timm.list_models():
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:10]
        raise ConfigError(f"backbone.model_name={model_name!r} is not a timm model. "
                         f"Similar names: {', '.join(close) or 'none'}")
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes,
                              in_chans=in_channels, **(model_kwargs or {}))
    if checkpoint:
        from mixbench.engine.checkpoint import load_weights

        model.load_state_dict(load_weights(checkpoint))
    return TimmBackbone(model)
