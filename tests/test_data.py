"""Dataset loaders on small files written here in the real on-disk formats."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from conftest import HostToDeviceCopies
from PIL import Image

from mixbench.data import Augment, InMemoryLoader, Split
from mixbench.data.loaders import random_crop_flip
from mixbench.errors import DatasetError, DatasetNotFoundError
from mixbench.components import DATASETS


# --- digits ---------------------------------------------------------------------------------
def test_digits_split_is_stratified_disjoint_and_fixed():
    a, b = DATASETS.build({"name": "digits"}), DATASETS.build({"name": "digits"})
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 180, 360)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert a.train.x.dtype == torch.uint8 and a.train.x.shape[1:] == (1, 8, 8)
    for split in (a.train, a.val, a.test):  # every class present in every split
        assert torch.bincount(split.y, minlength=10).min() > 0
    rows = {tuple(x.flatten().tolist()) + (int(y),) for s in (a.train, a.val, a.test)
            for x, y in zip(s.x, s.y)}
    assert len(rows) >= 1797 - 20  # (digits has a few exact duplicate images)


def test_digits_rejects_bad_fractions():
    with pytest.raises(ValueError, match="dataset.val_fraction"):
        DATASETS.build({"name": "digits", "val_fraction": 1.5})


# --- Fashion-MNIST (idx files) ---------------------------------------------------------------
def write_idx(path, array: np.ndarray, gz: bool):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def fake_fashion(root, n_train=60, n_test=20, gz=True):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, gz):
    fake_fashion(tmp_path, gz=gz)
    data = DATASETS.build({"name": "fashion_mnist", "root": str(tmp_path), "val_size": 10})
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 20)
    assert data.train.x.shape[1:] == (1, 28, 28) and data.num_classes == 10
    assert torch.bincount(data.val.y, minlength=10).tolist() == [1] * 10  # stratified


def test_fashion_mnist_torchvision_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    fake_fashion(raw, gz=False)
    data = DATASETS.build({"name": "fashion_mnist", "root": str(tmp_path), "val_size": 10})
    assert len(data.test) == 20


def test_fashion_mnist_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="make data"):
        DATASETS.build({"name": "fashion_mnist", "root": str(tmp_path)})


def test_truncated_idx_file_is_reported(tmp_path):
    fake_fashion(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        DATASETS.build({"name": "fashion_mnist", "root": str(tmp_path), "val_size": 10})


# --- CIFAR (python pickles) ------------------------------------------------------------------
def fake_cifar(root, variant):
    rng = np.random.default_rng(1)
    if variant == "cifar10":
        folder, files, key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in
                                                          range(1, 6)] + ["test_batch"], "labels"
    else:
        folder, files, key = root / "cifar-100-python", ["train", "test"], "fine_labels"
    folder.mkdir(parents=True)
    k = 10 if variant == "cifar10" else 100
    for name in files:
        n = 200 if name == "train" else 40  # cifar10: 5 train batches of 40 + a test batch
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 key: (np.arange(n) % k).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)


@pytest.mark.parametrize("variant,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_python_pickles(tmp_path, variant, classes):
    fake_cifar(tmp_path, variant)
    data = DATASETS.build({"name": variant, "root": str(tmp_path), "val_size": classes})
    n_train = 5 * 40 if variant == "cifar10" else 200  # five 40-image batches / one file
    assert len(data.train) + len(data.val) == n_train and len(data.val) == classes
    assert data.train.x.shape[1:] == (3, 32, 32) and data.num_classes == classes
    assert data.augment == Augment(crop_padding=4, hflip=True)


def test_cifar_missing_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="dataset.download=true") as err:
        DATASETS.build({"name": "cifar100", "root": str(tmp_path)})
    assert "cifar-100-python" in str(err.value)


# --- image folders ---------------------------------------------------------------------------
def write_images(folder, n, size=12, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"img{i}.png")


def test_imagefolder_class_layout(tmp_path):
    for cls in ("cat", "dog"):
        write_images(tmp_path / "train" / cls, 10)
        write_images(tmp_path / "val" / cls, 3)
    data = DATASETS.build({"name": "imagefolder", "root": str(tmp_path), "image_size": 8,
                           "train_crop": "pad_crop", "val_fraction": 0.2})
    assert (len(data.train), len(data.val), len(data.test), data.num_classes) == (16, 4, 6, 2)
    x, y = data.test[0]
    assert x.shape == (3, 8, 8) and y in (0, 1)


def test_imagefolder_tiny_imagenet_val_layout(tmp_path):
    for wnid in ("n01", "n02"):
        write_images(tmp_path / "train" / wnid / "images", 6)
    write_images(tmp_path / "val" / "images", 4)
    (tmp_path / "val" / "val_annotations.txt").write_text(
        "".join(f"img{i}.png\t{'n02' if i % 2 else 'n01'}\t0\t0\t5\t5\n" for i in range(4)))
    data = DATASETS.build({"name": "imagefolder", "root": str(tmp_path), "image_size": 8,
                           "train_crop": "pad_crop", "val_fraction": 0.25})
    assert [data.test[i][1] for i in range(4)] == [0, 1, 0, 1]


def test_imagefolder_missing_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train/CLASS"):
        DATASETS.build({"name": "imagefolder", "root": str(tmp_path)})


# --- batched augmentation and the in-memory loader ------------------------------------------
def test_random_crop_is_a_window_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.randn(32, 2, 6, 7)
    out = random_crop_flip(x, padding=2, hflip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(32):
        windows = [padded[i, :, r:r + 6, c:c + 7] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    shifts = {tuple(torch.nonzero(out[i].abs().sum(0) > 0)[0].tolist()) for i in range(32)}
    assert len(shifts) > 1  # crops differ per sample


def test_flip_flips_about_half():
    torch.manual_seed(0)
    x = torch.randn(400, 1, 3, 3)
    out = random_crop_flip(x, padding=0, hflip=True)
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert (flipped | kept).all() and 150 < flipped.sum() < 250


def test_device_resident_batches_never_wait_for_the_device():
    # The data moves to the device once; after that shuffling, cropping, flipping and
    # normalising run there. On the meta device reading a value on the host raises and
    # HostToDeviceCopies records host data sent over (see tests/test_methods.py).
    split = Split(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8), torch.arange(64))
    loader = InMemoryLoader(split, 16, shuffle=True, drop_last=True, device="meta",
                            mean=(0.5,), std=(0.2,), augment=Augment(crop_padding=2, hflip=True),
                            with_index=True)
    with HostToDeviceCopies() as copies:
        batches = list(loader)
    assert len(batches) == 4 and not copies.found
    assert all(x.device.type == "meta" and x.shape == (16, 1, 8, 8) for x, _, _ in batches)


def test_loader_covers_every_sample_once_and_normalises():
    split = Split(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2),
                  torch.arange(10))
    loader = InMemoryLoader(split, 4, shuffle=True, drop_last=False, device="cpu",
                            mean=(0.0,), std=(1 / 255,))
    seen = torch.cat([y for _, y in loader])
    assert len(loader) == 3 and sorted(seen.tolist()) == list(range(10))
    for x, y in loader:  # uint8 k → k/255, then (· - 0)/(1/255) → k
        assert torch.allclose(x[:, 0, 0, 0], y.float())
    assert len(InMemoryLoader(split, 4, shuffle=True, drop_last=True, device="cpu",
                              mean=(0.0,), std=(1.0,))) == 2
