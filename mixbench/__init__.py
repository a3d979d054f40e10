"""mixbench: a config-driven benchmark toolbox for mixup-style data augmentation."""

__version__ = "0.1.0"
