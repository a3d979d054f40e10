"""Backbones (registered in BACKBONES): CIFAR ResNets, a small CNN, an MLP, the ConvNet of
dataset distillation, and any timm model."""
from mixbench.models import convnet, mlp, resnet, small, timm_adapter  # noqa: F401  (registration)
from mixbench.models.base import Backbone

__all__ = ["Backbone"]
