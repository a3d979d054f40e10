"""Any timm model as a mixbench backbone (``backbone=timm backbone.model_name=...``).

``backbone.pretrained=true`` loads timm's pretrained weights: from the Hugging Face hub (one
process per machine downloads under DDP), or from ``backbone.pretrained_file=PATH`` (timm's
own loader: a classifier of another class count is dropped, the stem adapted to
``in_channels``). ``backbone.checkpoint=PATH`` loads a mixbench or plain state dict instead."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from mixbench.data.downloads import download_once
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@BACKBONES.register("timm")
def timm_backbone(*, num_classes: int, in_channels: int = 3, model_name: str = "resnet18",
                  pretrained: bool = False, pretrained_file: str | None = None,
                  checkpoint: str | None = None, model_kwargs: dict | None = None) -> TimmBackbone:
    if model_name not in timm.list_models():
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:10]
        raise ConfigError(f"backbone.model_name={model_name!r} is not a timm model. "
                         f"Similar names: {', '.join(close) or 'none'}")
    if pretrained_file and not pretrained:
        raise ConfigError("backbone.pretrained_file is read only with backbone.pretrained=true")
    if pretrained and checkpoint:
        raise ConfigError("backbone.pretrained and backbone.checkpoint both give the weights: "
                          "choose one")
    overlay = None
    if pretrained_file:
        if not Path(pretrained_file).expanduser().is_file():
            raise ConfigError(f"backbone.pretrained_file={pretrained_file} does not exist")
        overlay = {"file": str(Path(pretrained_file).expanduser())}
    elif pretrained:  # into the hub's cache once per machine; every rank then reads it there
        download_once(lambda: timm.create_model(model_name, pretrained=True))
    model = timm.create_model(model_name, pretrained=pretrained, num_classes=num_classes,
                              in_chans=in_channels, pretrained_cfg_overlay=overlay,
                              **(model_kwargs or {}))
    if checkpoint:
        from mixbench.engine.checkpoint import load_weights

        load_body(model, load_weights(checkpoint), checkpoint)
    return TimmBackbone(model)


def load_body(model: nn.Module, weights: dict, source) -> None:
    """``weights`` into ``model``; a classifier of another class count (ImageNet weights for
    a 100-class head) is left as initialised, every other tensor must match."""
    prefix = model.pretrained_cfg.get("classifier", "") if hasattr(model, "pretrained_cfg") \
        else ""
    own = model.state_dict()
    head = {k for k in weights if prefix and k.startswith(prefix + ".") and k in own
            and weights[k].shape != own[k].shape}
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in weights.items() if k not in head}, strict=False)
    if set(missing) - head or unexpected:
        raise ConfigError(f"backbone.checkpoint={source} does not fit this model: missing "
                          f"{sorted(set(missing) - head)[:5]}, unexpected {unexpected[:5]}")
