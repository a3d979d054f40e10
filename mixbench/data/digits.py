"""scikit-learn's bundled 8×8 digits: the embedded default, no download needed."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from mixbench.data.bundle import Augment, DataBundle, Split, stratified_holdout
from mixbench.data.label_noise import apply_label_noise
from mixbench.registry import DATASETS
from mixbench.errors import ConfigError


def _check_fraction(key: str, value: float, allow_zero: bool = False) -> None:
    if not (0.0 < value < 1.0 or (allow_zero and value == 0.0)):
        raise ConfigError(f"dataset.{key} must be in {'[' if allow_zero else '('}0, 1), "
                          f"got {value}")


@DATASETS.register("digits")
def build_digits(*, val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                 crop_padding: int = 0, hflip: bool = False, label_noise: dict | None = None,
                 root=None) -> DataBundle:
    """1,797 grey 8×8 images, 10 classes, split stratified into train/val/test with a fixed
    seed. Pixel values 0..16 are stored as uint8 0..255 like every other image set."""
    _check_fraction("val_fraction", val_fraction, allow_zero=True)  # 0: no validation split
    _check_fraction("test_fraction", test_fraction)
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # N×1×8×8
    labels = digits.target.astype(np.int64)
    rest, test_idx = stratified_holdout(labels, test_fraction, split_seed)
    if val_fraction == 0:  # every non-test image trains; the validation split is empty
        train_pos, val_pos = np.arange(len(rest)), np.arange(0)
    else:
        train_pos, val_pos = stratified_holdout(labels[rest],
                                                val_fraction / (1 - test_fraction), split_seed)
    # Noise on the train+val pool (and the test split); the splits above used the clean
    # labels, so every p keeps the same images in each split.
    noise = apply_label_noise(labels[rest], labels[test_idx], 10, label_noise, pool_index=rest,
                              test_index=test_idx)
    targets = torch.from_numpy(labels).clone()
    targets[torch.from_numpy(rest)] = noise.pool
    targets[torch.from_numpy(test_idx)] = noise.test
    all_data = Split(torch.from_numpy(images), targets)
    train = all_data.subset(rest[train_pos])
    scaled = train.x.float() / 255.0
    return DataBundle(
        train=train, val=all_data.subset(rest[val_pos]), test=all_data.subset(test_idx),
        num_classes=10, in_channels=1, image_size=(8, 8),
        mean=(scaled.mean().item(),), std=(scaled.std().item(),),
        augment=Augment(crop_padding=crop_padding, hflip=hflip), label_noise=noise.record,
        test_clean_labels=noise.test_clean,
    )
