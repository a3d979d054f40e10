"""CIFAR-10-C and CIFAR-100-C as published: ``ROOT/CIFAR-10-C/{corruption}.npy`` holds the five
severities stacked (severity 1 first), N×32×32×3 uint8, and ``labels.npy`` the N labels.

The published files hold 10,000 images per severity (50,000 rows); the reader takes a fifth of
the rows per severity, whatever N is, so a file of 5·n rows is read the same way."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mixbench.data.bundle import Split
from mixbench.errors import ConfigError, DatasetError, DatasetNotFoundError
from mixbench.shift.corruptions import CORRUPTIONS, SEVERITIES

# the 15 test corruptions, then the 4 the authors published for validation
PUBLISHED_CORRUPTIONS = CORRUPTIONS + ("speckle_noise", "gaussian_blur", "spatter", "saturate")

_VARIANTS = {
    "cifar10": ("CIFAR-10-C", "https://zenodo.org/records/2535967"),
    "cifar100": ("CIFAR-100-C", "https://zenodo.org/records/3555552"),
}


def _check_choice(key: str, value, choices) -> None:
    if value not in choices or isinstance(value, bool):
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _open(path: Path, folder: str, source: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} is missing. Download {folder}.tar from {source}, extract it so that "
            f"{path.parent} holds the .npy files, and pass the folder above it as the root.")
    try:
        return np.load(path, mmap_mode="r")  # only the asked severity is read from disk
    except ValueError as err:
        raise DatasetError(f"{path} is not a readable .npy file: {err}") from err


def read_cifar_c(root: str | Path, variant: str, name: str, severity: int) -> Split:
    """Corruption ``name`` at ``severity`` (1-5) of CIFAR-10-C (``variant='cifar10'``) or
    CIFAR-100-C (``'cifar100'``) under ``root``: images N×3×32×32 uint8, labels int64."""
    _check_choice("variant", variant, tuple(_VARIANTS))
    _check_choice("corruption", name, PUBLISHED_CORRUPTIONS)
    _check_choice("severity", severity, SEVERITIES)
    folder, source = _VARIANTS[variant]
    images_path = Path(root).expanduser() / folder / f"{name}.npy"
    labels_path = images_path.with_name("labels.npy")
    images = _open(images_path, folder, source)
    labels = _open(labels_path, folder, source)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise DatasetError(f"{images_path} should hold uint8 images N×32×32×3, found "
                           f"{images.dtype} of shape {images.shape}")
    if len(images) % len(SEVERITIES):
        raise DatasetError(f"{images_path} has {len(images)} images, not five equal severities")
    if labels.shape != (len(images),):
        raise DatasetError(f"{labels_path} has shape {labels.shape}; the images need "
                           f"({len(images)},)")
    per_severity = len(images) // len(SEVERITIES)
    rows = slice((severity - 1) * per_severity, severity * per_severity)
    x = torch.from_numpy(np.ascontiguousarray(images[rows].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(np.asarray(labels[rows], dtype=np.int64))
    return Split(x, y)
