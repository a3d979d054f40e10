"""What every dataset builder returns: splits plus the facts the trainer needs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from mixbench.errors import ConfigError


@dataclass
class Split:
    """An in-memory split: images as uint8 N×C×H×W (or float features N×D), labels as int64 N
    (classification) or float N×D targets (regression)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        return Split(self.x[index], self.y[index])


# dataset.crop_padding_mode → torch.nn.functional.pad's mode
PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}


@dataclass
class Augment:
    """Batched train-time augmentation for in-memory images (done on the batch's device)."""

    crop_padding: int = 0  # random crop of the original size after padding by this much
    hflip: bool = False
    padding_mode: str = "zeros"  # zeros | reflect | replicate (see loaders.random_crop_flip)

    def __post_init__(self):
        if self.padding_mode not in PADDING_MODES:
            raise ConfigError(f"dataset.crop_padding_mode must be one of "
                              f"{', '.join(PADDING_MODES)}, got {self.padding_mode!r}")


@dataclass
class DataBundle:
    train: Split | Dataset
    val: Split | Dataset
    test: Split | Dataset
    num_classes: int  # classes, or regression outputs (the size of the model's last layer)
    in_channels: int  # image channels, or input features for tabular data
    image_size: tuple[int, int] | None  # None for tabular data
    task: str = "classification"  # or "regression"
    # Per-channel normalisation applied to in-memory batches after scaling uint8 to [0, 1].
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    augment: Augment = field(default_factory=Augment)
    # Regression targets are standardised with the training split's statistics (so one
    # optimiser setting suits every dataset); metrics undo it: y = y_std · target_std + mean.
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None
    name: str = ""  # the dataset's registry name (set by the trainer from the config)
    # What dataset.label_noise changed in the labels (see data/label_noise.py); the trainer
    # saves it as label_noise.json in the run folder. None: labels as published.
    label_noise: dict | None = None
    # The test labels as published, when dataset.label_noise.test made the test split's
    # noisy: the evaluation reports its metrics against both.
    test_clean_labels: torch.Tensor | None = None

    def splits(self) -> dict[str, Split | Dataset]:
        return {"train": self.train, "val": self.val, "test": self.test}


def stratified_holdout(labels, holdout: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out), stratified by label, fixed by ``seed`` (not the run's seed, so
    every seed of a benchmark sees the same split)."""
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    keep, held = train_test_split(index, test_size=holdout, stratify=labels, random_state=seed)
    return np.sort(keep), np.sort(held)


def limit_train(bundle: DataBundle, max_train: int | None, split_seed: int = 0) -> DataBundle:
    """``bundle`` with a class-stratified subset of at most ``max_train`` training samples
    (fixed by ``split_seed``): fine-tuning on many tasks in minutes on a CPU."""
    if max_train is None or max_train >= len(bundle.train):
        return bundle
    if max_train <= 0:
        raise ConfigError(f"dataset.max_train must be positive, got {max_train}")
    keep, _ = stratified_holdout(bundle.train.y.numpy(), len(bundle.train) - max_train,
                                 split_seed)
    return dataclasses.replace(bundle, train=bundle.train.subset(keep))
