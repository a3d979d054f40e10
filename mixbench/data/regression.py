"""Regression datasets: two embedded (diabetes, rotated digits) and the tabular / time-series
sets of the C-Mixup paper, read from local files in their published formats.

Targets are float N×D. Features and targets are standardised with the training split's
statistics; the bundle keeps the target statistics so metrics are reported in the original
units (the units the published tables use)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_diabetes, load_digits

from mixbench.data.bundle import DataBundle, Split, stratified_holdout
from mixbench.errors import ConfigError, DatasetError, DatasetNotFoundError
from mixbench.registry import DATASETS

# The C-Mixup paper's 70/10/20 train/val/test split of the tabular and time-series sets.
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


def _stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and std over the first axis; constant columns get std 1."""
    flat = t.reshape(len(t), -1) if t.dim() > 1 else t[:, None]
    std = flat.std(dim=0)
    return flat.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std))


def _regression_bundle(train: Split, val: Split, test: Split, *, in_channels: int,
                       image_size=None, mean=(0.0,), std=(1.0,)) -> DataBundle:
    """Standardise the targets with the training split's statistics and wrap the splits."""
    t_mean, t_std = _stats(train.y)
    scale = lambda s: Split(s.x, ((s.y - t_mean) / t_std).float())  # noqa: E731
    return DataBundle(train=scale(train), val=scale(val), test=scale(test),
                      num_classes=train.y.shape[1], in_channels=in_channels,
                      image_size=image_size, task="regression", mean=mean, std=std,
                      target_mean=tuple(t_mean.tolist()), target_std=tuple(t_std.tolist()))


def tabular_bundle(x: np.ndarray, y: np.ndarray, split_seed: int) -> DataBundle:
    """Random 70/10/20 split (fixed by ``split_seed``), features standardised on train."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y, dtype=np.float32)).reshape(len(x), -1)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    n_train = round(SPLIT_FRACTIONS[0] * len(x))
    n_val = round(SPLIT_FRACTIONS[1] * len(x))
    parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    f_mean, f_std = _stats(x[parts[0]])
    splits = [Split((x[p] - f_mean) / f_std, y[p]) for p in parts]
    return _regression_bundle(*splits, in_channels=x.shape[1])


# --- embedded ------------------------------------------------------------------------------
@DATASETS.register("diabetes")
def build_diabetes(*, split_seed: int = 0, root=None) -> DataBundle:
    """scikit-learn's bundled diabetes set: 442 patients, 10 features, target = disease
    progression after one year."""
    data = load_diabetes()
    return tabular_bundle(data.data, data.target, split_seed)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate a float batch N×C×H×W counter-clockwise by per-image angles (bilinear, zeros
    outside), as one batched grid sample."""
    rad = torch.deg2rad(degrees)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(rad)
    # The grid says where each output pixel samples the input: rotate it the other way.
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, align_corners=False)


@DATASETS.register("rotated_digits")
def build_rotated_digits(*, max_angle: float = 60.0, image_size: int = 16,
                         val_fraction: float = 0.1, test_fraction: float = 0.2,
                         split_seed: int = 0, root=None) -> DataBundle:
    """scikit-learn's digits, upsampled to ``image_size`` and rotated by a random angle in
    [-max_angle, max_angle]; the target is the angle in degrees (an embedded stand-in for the
    C-Mixup paper's RCF-MNIST). Angles and splits are fixed by ``split_seed``."""
    if not 0 < max_angle <= 180:
        raise ConfigError(f"dataset.max_angle must be in (0, 180], got {max_angle}")
    if image_size < 8:
        raise ConfigError(f"dataset.image_size must be >= 8, got {image_size}")
    digits = load_digits()
    images = torch.from_numpy(digits.images).float()[:, None] / 16.0  # N×1×8×8 in [0, 1]
    images = torch.nn.functional.interpolate(images, size=image_size, mode="bilinear",
                                             align_corners=False)
    gen = torch.Generator().manual_seed(split_seed)
    angles = (torch.rand(len(images), generator=gen) * 2 - 1) * max_angle
    rotated = (rotate(images, angles).clamp(0, 1) * 255).round().to(torch.uint8)
    labels = digits.target
    rest, test_idx = stratified_holdout(labels, test_fraction, split_seed)  # stratified by digit
    train_pos, val_pos = stratified_holdout(labels[rest], val_fraction / (1 - test_fraction),
                                            split_seed)
    everything = Split(rotated, angles[:, None])
    train = everything.subset(rest[train_pos])
    pixels = train.x.float() / 255.0
    return _regression_bundle(train, everything.subset(rest[val_pos]),
                              everything.subset(test_idx), in_channels=1,
                              image_size=(image_size, image_size),
                              mean=(pixels.mean().item(),), std=(pixels.std().item(),))


# --- files in their published formats ------------------------------------------------------
def _find(root: str | None, dataset: str, names: tuple[str, ...], source: str) -> Path:
    if root is None:
        raise DatasetNotFoundError(f"dataset={dataset} needs dataset.root=FOLDER holding "
                                   f"{names[0]} ({source})")
    folder = Path(root).expanduser()
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DatasetNotFoundError(f"dataset={dataset}: {folder / names[0]} not found. Put "
                               f"{' or '.join(names)} from {source} in {folder}, or point "
                               f"dataset.root at the folder that holds it.")


def read_table(path: Path, columns: int | None, sep: str | None = None) -> np.ndarray:
    """A headerless numeric table (whitespace-separated unless ``sep``; .gz read as is)."""
    try:
        frame = pd.read_csv(path, header=None, sep=sep or r"\s+")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as err:
        raise DatasetError(f"{path} cannot be parsed as a numeric table: {err}") from err
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if columns is not None and values.shape[1] != columns:
        raise DatasetError(f"{path} has {values.shape[1]} columns, expected {columns}")
    if np.isnan(values).any():
        row = int(np.argwhere(np.isnan(values))[0, 0]) + 1
        raise DatasetError(f"{path} has a missing or non-numeric value on line {row}")
    return values


@DATASETS.register("airfoil")
def build_airfoil(*, root: str | None = None, split_seed: int = 0) -> DataBundle:
    """NASA airfoil self-noise (UCI): 1,503 rows of 5 features and the scaled sound pressure
    level in dB, tab-separated in ``airfoil_self_noise.dat``."""
    path = _find(root, "airfoil", ("airfoil_self_noise.dat",), "the UCI repository")
    table = read_table(path, columns=6)
    return tabular_bundle(table[:, :5], table[:, 5], split_seed)


@DATASETS.register("no2")
def build_no2(*, root: str | None = None, split_seed: int = 0) -> DataBundle:
    """NO2 air pollution (StatLib): 500 rows, whitespace-separated in ``NO2.dat``; column 1
    is the log NO2 concentration (the target), columns 2-8 the predictors."""
    path = _find(root, "no2", ("NO2.dat", "no2.dat"), "StatLib")
    table = read_table(path, columns=8)
    return tabular_bundle(table[:, 1:], table[:, 0], split_seed)


class Windows:
    """The sliding windows of a T×m series as a lazily indexed N×P×m tensor: row i is
    ``series[ends[i] - P : ends[i]]``. Only the rows asked for are built, so electricity's
    18k windows of 168×321 values never sit in memory at once."""

    def __init__(self, series: torch.Tensor, ends: torch.Tensor, window: int):
        self.series, self.ends, self.window = series, ends, window
        self.offsets = torch.arange(-window, 0, device=series.device)
        self.shape = (len(ends), window, series.shape[1])
        self.dtype = series.dtype

    def __len__(self) -> int:
        return len(self.ends)

    def dim(self) -> int:
        return 3

    def to(self, device) -> "Windows":
        return Windows(self.series.to(device), self.ends.to(device), self.window)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            index = torch.arange(len(self), device=self.ends.device)[index]
        return self.series[self.ends[index][:, None] + self.offsets]  # B×P×m


def time_series_bundle(series: np.ndarray, window: int, horizon: int) -> DataBundle:
    """Forecast every series ``horizon`` steps after a window of ``window`` steps, as in
    LSTNet's set-up that C-Mixup follows: each column is divided by its largest absolute
    value, and the split is chronological 70/10/20 by target time."""
    if window < 1 or horizon < 1:
        raise ConfigError(f"dataset.window and dataset.horizon must be >= 1, got {window}, "
                          f"{horizon}")
    n = len(series)
    peak = np.abs(series).max(axis=0)
    data = torch.from_numpy(series / np.where(peak > 0, peak, 1.0)).float()
    train_end, val_end = int(SPLIT_FRACTIONS[0] * n), int(sum(SPLIT_FRACTIONS[:2]) * n)
    first = window + horizon - 1  # the first target time with a full window before it
    if train_end <= first:
        raise DatasetError(f"the series has {n} steps: too short for window={window} and "
                           f"horizon={horizon}")

    def split(targets: range) -> Split:
        t = torch.tensor(list(targets))
        return Split(Windows(data, t - horizon + 1, window), data[t])

    return _regression_bundle(split(range(first, train_end)), split(range(train_end, val_end)),
                              split(range(val_end, n)), in_channels=window * data.shape[1])


def _time_series(dataset: str, filename: str, columns: int, root, window, horizon):
    path = _find(root, dataset, (filename, filename + ".gz"),
                 "the multivariate-time-series-data collection (LSTNet)")
    return time_series_bundle(read_table(path, columns, sep=","), window, horizon)


@DATASETS.register("exchange_rate")
def build_exchange_rate(*, root: str | None = None, window: int = 168,
                        horizon: int = 12) -> DataBundle:
    """Daily exchange rates of 8 countries, 1990-2016: ``exchange_rate.txt``, 7,588 rows of
    8 comma-separated values."""
    return _time_series("exchange_rate", "exchange_rate.txt", 8, root, window, horizon)


@DATASETS.register("electricity")
def build_electricity(*, root: str | None = None, window: int = 168,
                      horizon: int = 24) -> DataBundle:
    """Hourly consumption of 321 clients, 2012-2014: ``electricity.txt``, 26,304 rows of 321
    comma-separated values."""
    return _time_series("electricity", "electricity.txt", 321, root, window, horizon)

