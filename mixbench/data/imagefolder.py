"""Image-folder datasets: ImageNet, Tiny-ImageNet, CUB (in class-folder layout), your own.

Layout: ``ROOT/train/CLASS/*.jpg`` and ``ROOT/TEST_SPLIT/CLASS/*.jpg`` (TEST_SPLIT defaults to
``val``, as ImageNet reports on its val set). Tiny-ImageNet's own val layout
(``val/images/*.JPEG`` + ``val/val_annotations.txt``) is read as it ships. The validation split
used for temperature scaling is held out from train, stratified, with a fixed seed."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms

from mixbench.data.bundle import DataBundle, stratified_holdout
from mixbench.data.label_noise import apply_label_noise, check_label_noise
from mixbench.registry import DATASETS
from mixbench.errors import ConfigError, DatasetError, DatasetNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LabelledFiles(Dataset):
    """(path, label) pairs read with torchvision's default image loader."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.transform(datasets.folder.default_loader(path)), label


def _transforms(image_size: int, train_crop: str, crop_padding: int, mean, std):
    normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if train_crop == "random_resized":  # ImageNet-style
        train = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
        test = [transforms.Resize(round(image_size / 0.875)), transforms.CenterCrop(image_size)]
    elif train_crop == "pad_crop":  # CIFAR-style, for small images (Tiny-ImageNet at 64 px)
        train = [transforms.Resize(image_size), transforms.CenterCrop(image_size),
                 transforms.RandomCrop(image_size, padding=crop_padding),
                 transforms.RandomHorizontalFlip()]
        test = [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    else:
        raise ConfigError(f"dataset.train_crop must be 'random_resized' or 'pad_crop', "
                         f"got {train_crop!r}")
    return transforms.Compose(train + normalize), transforms.Compose(test + normalize)


def _test_set(folder: Path, class_to_idx: dict[str, int], transform) -> Dataset:
    annotations = folder / "val_annotations.txt"
    if annotations.is_file():  # Tiny-ImageNet
        samples = []
        for line in annotations.read_text().splitlines():
            if line.strip():
                name, wnid = line.split("\t")[:2]
                samples.append((str(folder / "images" / name), class_to_idx[wnid]))
        return LabelledFiles(samples, transform)
    test = datasets.ImageFolder(str(folder), transform=transform)
    if test.class_to_idx != class_to_idx:
        raise DatasetError(f"the classes under {folder} differ from those under train/: "
                         f"both folders need the same class sub-folders")
    return test


@DATASETS.register("imagefolder")
def build_imagefolder(*, root: str, test_split: str = "val", image_size: int = 224,
                      train_crop: str = "random_resized", crop_padding: int = 4,
                      val_fraction: float = 0.05, split_seed: int = 0,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      label_noise: dict | None = None) -> DataBundle:
    if root is None:
        raise DatasetNotFoundError("dataset=imagefolder needs dataset.root=FOLDER "
                                   "(holding train/ and val/ class folders)")
    root_path = Path(root).expanduser()
    for folder in (root_path / "train", root_path / test_split):
        if not folder.is_dir():
            raise DatasetNotFoundError(
                f"image folder {folder} is missing: dataset=imagefolder expects "
                f"{root_path}/train/CLASS/*.jpg and {root_path}/{test_split}/CLASS/*.jpg")
    train_tf, test_tf = _transforms(image_size, train_crop, crop_padding, mean, std)
    train_full = datasets.ImageFolder(str(root_path / "train"), transform=train_tf)
    train_eval = datasets.ImageFolder(str(root_path / "train"), transform=test_tf)
    keep, held = stratified_holdout(train_full.targets, val_fraction, split_seed)
    if (check_label_noise(label_noise) or {}).get("test"):
        raise ConfigError("dataset.label_noise.test is for in-memory datasets (digits, "
                          "fashion_mnist, cifar10, cifar100); image folders take training "
                          "noise only")
    noise = apply_label_noise(train_full.targets, [], len(train_full.classes), label_noise)
    if noise.record is not None:  # both views of train/ (augmented, plain) get the same labels
        for view in (train_full, train_eval):
            view.targets = noise.pool.tolist()
            view.samples = view.imgs = [(path, label) for (path, _), label
                                        in zip(view.samples, view.targets)]
    return DataBundle(
        train=Subset(train_full, keep.tolist()), val=Subset(train_eval, held.tolist()),
        test=_test_set(root_path / test_split, train_full.class_to_idx, test_tf),
        num_classes=len(train_full.classes), in_channels=3, image_size=(image_size, image_size),
        mean=tuple(mean), std=tuple(std), label_noise=noise.record,
    )
