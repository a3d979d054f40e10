"""mixbench: a config-driven benchmark toolbox for mixup-style data augmentation."""
from mixbench import config  # noqa: F401  (the resolver mixbench/configs/train.yaml names its folders with)

__version__ = "0.1.0"
