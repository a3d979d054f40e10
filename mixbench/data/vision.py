"""Real image datasets read from local files: Fashion-MNIST, CIFAR-10/100, image folders.

Nothing here downloads unless the user asks (``dataset.download=true``): a missing file gives
an error that says which file to put where."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from mixbench.data.bundle import Augment, DataBundle, Split, limit_train, stratified_holdout
from mixbench.data.downloads import download_once
from mixbench.data.label_noise import NoisyLabels, apply_label_noise
from mixbench.registry import DATASETS
from mixbench.errors import ConfigError, DatasetError, DatasetNotFoundError


def _holdout_val(train: Split, test: Split, val_size: int, split_seed: int, num_classes: int,
                 label_noise: dict | None) -> tuple[Split, Split, Split, NoisyLabels]:
    """(train, val, test, the labels' noise): val held out from train, stratified on the
    clean labels (the same images for every noise level); the training noise covers both
    parts, the test noise the test split. ``val_size`` 0: every training image trains and
    the validation split is empty (OpenMixup's protocol; no temperature can be fitted)."""
    if not 0 <= val_size < len(train):
        raise ConfigError(f"dataset.val_size must be in [0, {len(train)}), got {val_size} "
                          f"(0 trains on every training image and leaves no validation split)")
    noise = apply_label_noise(train.y, test.y, num_classes, label_noise)
    pool = Split(train.x, noise.pool)
    if val_size == 0:
        return pool, pool.subset([]), Split(test.x, noise.test), noise
    keep, held = stratified_holdout(train.y.numpy(), val_size, split_seed)
    return pool.subset(keep), pool.subset(held), Split(test.x, noise.test), noise


# --- Fashion-MNIST -----------------------------------------------------------------------
# Debian's `dataset-fashion-mnist` package (`make data`) puts the gzipped idx files here.
FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> torch.Tensor:
    """Parse an idx file (the MNIST format: magic, dims, big-endian uint8 payload), gzipped
    or not."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not a uint8 idx file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    payload = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: expected {int(np.prod(dims))} values, "
                         f"found {payload.size}")
    return torch.from_numpy(payload.reshape(dims).copy())


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _fashion_files(root: Path, download: bool) -> dict[str, Path]:
    """The four idx files under ``root`` (or ``root``/FashionMNIST/raw, torchvision's layout);
    fetched there by torchvision first when missing and ``download`` is set."""
    stems = [stem for pair in _FASHION_FILES.values() for stem in pair]
    if download and any(_find_idx(root, stem) is None for stem in stems):
        from torchvision import datasets

        download_once(lambda: datasets.FashionMNIST(str(root), train=True, download=True))
    found = {stem: _find_idx(root, stem) for stem in stems}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise DatasetNotFoundError(
            f"Fashion-MNIST file '{missing[0]}[.gz]' not found under {root} (or "
            f"{root}/FashionMNIST/raw). Install Debian's dataset-fashion-mnist package "
            f"(`make data`), put the four idx files there and pass dataset.root=THAT_FOLDER, "
            f"or pass dataset.download=true (with a writable dataset.root).")
    return found


@DATASETS.register("fashion_mnist")
def build_fashion_mnist(*, root: str | None = None, download: bool = False,
                        val_size: int = 5000, split_seed: int = 0,
                        crop_padding: int = 2, hflip: bool = True,
                        label_noise: dict | None = None,
                        max_train: int | None = None) -> DataBundle:
    """70k grey 28×28 images of clothing, 10 classes; ``val_size`` held out from train;
    ``max_train``: a class-stratified subset of the rest (all of it when None);
    ``download``: fetch the files into ``root`` through torchvision when they are missing."""
    root_path = Path(root or FASHION_MNIST_DEFAULT_ROOT).expanduser()
    files = _fashion_files(root_path, download)
    splits = {}
    for which, (images, labels) in _FASHION_FILES.items():
        x = read_idx(files[images])[:, None]  # N×1×28×28
        y = read_idx(files[labels]).long()
        splits[which] = Split(x, y)
    train, val, test, noise = _holdout_val(splits["train"], splits["test"], val_size,
                                           split_seed, 10, label_noise)
    bundle = DataBundle(train=train, val=val, test=test, num_classes=10, in_channels=1,
                        image_size=(28, 28), mean=(0.2860,), std=(0.3530,),
                        augment=Augment(crop_padding=crop_padding, hflip=hflip),
                        label_noise=noise.record, test_clean_labels=noise.test_clean)
    return limit_train(bundle, max_train, split_seed)


# --- CIFAR-10 / CIFAR-100 (the "python version" pickles) -----------------------------------
_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", classes=10, label_key="labels",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": dict(folder="cifar-100-python", classes=100, label_key="fine_labels",
                     train=["train"], test=["test"],
                     mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}


def _read_cifar_batches(folder: Path, files: list[str], label_key: str) -> Split:
    xs, ys = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DatasetNotFoundError(f"CIFAR file {path} is missing")
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # the official format is a pickle
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(entry[label_key], dtype=np.int64))
    return Split(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))


def _stats(key: str, value, default: tuple[float, ...]) -> tuple[float, ...]:
    """``dataset.mean`` / ``dataset.std``: null keeps the dataset's own statistics."""
    if value is None:
        return default
    value = tuple(float(v) for v in value)
    if len(value) != len(default) or (key == "std" and min(value) <= 0):
        raise ConfigError(f"dataset.{key} must be {len(default)} numbers"
                          + (" > 0" if key == "std" else "") + f" (one per channel), got "
                          f"{list(value)}; null uses the dataset's own {list(default)}")
    return value


def _build_cifar(variant: str, root: str, download: bool, val_size: int, split_seed: int,
                 crop_padding: int, hflip: bool, label_noise: dict | None,
                 crop_padding_mode: str = "zeros", mean=None, std=None) -> DataBundle:
    spec = _CIFAR[variant]
    root_path = Path(root).expanduser()
    folder = root_path / spec["folder"]
    if not folder.is_dir():
        if not download:
            raise DatasetNotFoundError(
                f"{variant} not found: expected the folder {folder} (the 'python version' "
                f"archive from the CIFAR website, extracted). Put it there, point "
                f"dataset.root at its parent, or pass dataset.download=true.")
        from torchvision import datasets

        cls = datasets.CIFAR10 if variant == "cifar10" else datasets.CIFAR100
        download_once(lambda: cls(str(root_path), train=True, download=True))
    train = _read_cifar_batches(folder, spec["train"], spec["label_key"])
    test = _read_cifar_batches(folder, spec["test"], spec["label_key"])
    train, val, test, noise = _holdout_val(train, test, val_size, split_seed, spec["classes"],
                                           label_noise)
    return DataBundle(train=train, val=val, test=test, num_classes=spec["classes"],
                      in_channels=3, image_size=(32, 32),
                      mean=_stats("mean", mean, spec["mean"]),
                      std=_stats("std", std, spec["std"]),
                      augment=Augment(crop_padding=crop_padding, hflip=hflip,
                                      padding_mode=crop_padding_mode),
                      label_noise=noise.record, test_clean_labels=noise.test_clean)


@DATASETS.register("cifar10")
def build_cifar10(*, root: str = "data", download: bool = False, val_size: int = 5000,
                  split_seed: int = 0, crop_padding: int = 4, hflip: bool = True,
                  label_noise: dict | None = None, crop_padding_mode: str = "zeros",
                  mean=None, std=None) -> DataBundle:
    return _build_cifar("cifar10", root, download, val_size, split_seed, crop_padding, hflip,
                        label_noise, crop_padding_mode, mean, std)


@DATASETS.register("cifar100")
def build_cifar100(*, root: str = "data", download: bool = False, val_size: int = 5000,
                   split_seed: int = 0, crop_padding: int = 4, hflip: bool = True,
                   label_noise: dict | None = None, crop_padding_mode: str = "zeros",
                   mean=None, std=None) -> DataBundle:
    return _build_cifar("cifar100", root, download, val_size, split_seed, crop_padding, hflip,
                        label_noise, crop_padding_mode, mean, std)
