"""Data for metric learning: training and test classes are disjoint (retrieval on unseen
classes), and training batches hold m images of each of batch/m classes.

- ``split_by_class``: an in-memory classification dataset (digits, Fashion-MNIST, CIFAR) cut
  into training classes and unseen test classes (0-4 / 5-9 by default);
- ``cub200``, ``cars196``, ``sop``: CUB-200-2011 (100/100 classes), Cars-196 (98/98) and
  Stanford Online Products (11,318 / 11,316) read from their published layouts;
- ``MPerClassLoader`` / ``MPerClassBatches``: batches drawn by pytorch-metric-learning's
  ``MPerClassSampler``, the same order on every rank, each rank taking whole classes.

A retrieval bundle's ``val`` split is the training images without augmentation: the reference
set of utilisation (the distance from test embeddings to training embeddings)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from pytorch_metric_learning.samplers import MPerClassSampler

from mixbench.data.bundle import DataBundle, Split
from mixbench.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, LabelledFiles, _transforms
from mixbench.data.loaders import InMemoryLoader
from mixbench.engine.distributed import SINGLE, DistInfo
from mixbench.errors import ConfigError, DatasetError, DatasetNotFoundError
from mixbench.registry import DATASETS

MIN_CLASSES = 2  # retrieval needs a same-class neighbour and another class, on each side


def _relabel(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    lookup = torch.full((int(max(classes)) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    return lookup[labels]


def check_classes(train_classes: int, test_classes: int, dataset: str) -> None:
    if train_classes < MIN_CLASSES or test_classes < MIN_CLASSES:
        raise ConfigError(f"retrieval on dataset={dataset} needs at least {MIN_CLASSES} training "
                          f"and {MIN_CLASSES} test classes, got {train_classes} and "
                          f"{test_classes}: choose protocol.train_classes among its classes so "
                          f"that both sides keep two or more")


def split_by_class(data: DataBundle, train_classes: list[int] | None = None) -> DataBundle:
    """Training on ``train_classes`` (default: the first half of the classes) with every
    image of them in the train and val files, testing on the other classes' test images.
    Labels become 0..K-1 on each side, in class order."""
    if data.task == "retrieval":
        return data  # cub200, cars196, sop: split by their publishers
    if data.task != "classification":
        raise ConfigError(f"protocol=retrieval needs a classification dataset to split by class;"
                          f" dataset={data.name} is a {data.task} task")
    if not all(isinstance(s, Split) for s in data.splits().values()):
        raise ConfigError("protocol=retrieval splits in-memory datasets (digits, fashion_mnist, "
                          "cifar10, cifar100) by class; for image files use dataset=cub200, "
                          "cars196 or sop")
    everything = list(range(data.num_classes))
    train_classes = (everything[: data.num_classes // 2] if train_classes is None
                     else sorted({int(c) for c in train_classes}))
    unknown = [c for c in train_classes if c not in everything]
    if unknown:
        raise ConfigError(f"protocol.train_classes={unknown} are not classes of dataset="
                          f"{data.name} (0..{data.num_classes - 1})")
    test_classes = [c for c in everything if c not in train_classes]
    check_classes(len(train_classes), len(test_classes), data.name)
    pool = Split(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))
    train = pool.subset(torch.nonzero(torch.isin(pool.y, torch.tensor(train_classes))).flatten())
    test = data.test.subset(torch.nonzero(torch.isin(data.test.y,
                                                     torch.tensor(test_classes))).flatten())
    train = Split(train.x, _relabel(train.y, train_classes))
    test = Split(test.x, _relabel(test.y, test_classes))
    return dataclasses.replace(data, train=train, val=train, test=test,
                               num_classes=len(train_classes), task="retrieval",
                               label_noise=None, test_clean_labels=None)


# --- batches of m images per class ---------------------------------------------------------

def check_m_per_class(labels: torch.Tensor, m: int, batch_size: int, shard: DistInfo) -> None:
    classes = len(torch.unique(labels))
    if m < 1 or batch_size % m:
        raise ConfigError(f"trainer.batch_size={batch_size} must be a multiple of "
                          f"protocol.m_per_class={m}")
    if m * classes < batch_size:
        raise ConfigError(f"a batch of {batch_size} with protocol.m_per_class={m} needs "
                          f"{batch_size // m} classes; the training split has {classes}: lower "
                          f"trainer.batch_size or raise protocol.m_per_class")
    if (batch_size // shard.world_size) % m:
        raise ConfigError(f"each of the {shard.world_size} processes takes "
                          f"{batch_size // shard.world_size} images of a batch; that must be a "
                          f"multiple of protocol.m_per_class={m} (whole classes per process)")


def m_per_class_order(labels: torch.Tensor, m: int, batch_size: int) -> torch.Tensor:
    """One epoch's indices (as many as there are images, rounded down to whole batches):
    PML's MPerClassSampler, which draws from numpy's global RNG (the trainer seeds it from
    (seed, epoch) on every rank, so all ranks draw the same order)."""
    sampler = MPerClassSampler(labels.cpu(), m, batch_size=batch_size,
                               length_before_new_iter=max(len(labels), batch_size))
    return torch.as_tensor(list(iter(sampler)), dtype=torch.long)


class MPerClassLoader(InMemoryLoader):
    """``InMemoryLoader`` whose training batches hold ``m`` images of each of batch/m classes;
    under DDP each rank takes its slice (whole classes) of every global batch. Yields
    (x, y, index)."""

    def __init__(self, split: Split, batch_size: int, m: int, *, device, mean, std, augment,
                 shard: DistInfo = SINGLE):
        check_m_per_class(split.y, m, batch_size, shard)
        super().__init__(split, batch_size, shuffle=True, drop_last=True, device=device,
                         mean=mean, std=std, augment=augment, with_index=True, shard=shard)
        self.m = m

    def __len__(self) -> int:
        return max(len(self.y), self.batch_size) // self.batch_size

    def __iter__(self):
        order = m_per_class_order(self.y, self.m, self.batch_size).to(self.device)
        local = self.batch_size // self.shard.world_size
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.shard.enabled:
                idx = idx[self.shard.rank * local:(self.shard.rank + 1) * local]
            x, y = self.fetch(idx)
            yield x, y, idx


class MPerClassBatches(torch.utils.data.Sampler):
    """A DataLoader ``batch_sampler`` for file datasets: the same m-per-class order on every
    rank, this rank's slice of each global batch."""

    def __init__(self, labels, m: int, batch_size: int, shard: DistInfo = SINGLE):
        self.labels = torch.as_tensor(labels)
        check_m_per_class(self.labels, m, batch_size, shard)
        self.m, self.batch_size, self.shard = m, batch_size, shard

    def __len__(self) -> int:
        return max(len(self.labels), self.batch_size) // self.batch_size

    def __iter__(self):
        order = m_per_class_order(self.labels, self.m, self.batch_size)
        local = self.batch_size // self.shard.world_size
        for i in range(len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield batch[self.shard.rank * local:(self.shard.rank + 1) * local].tolist()


def split_labels(split) -> torch.Tensor:
    if isinstance(split, Split):
        return split.y
    return torch.as_tensor(split.targets)


# --- CUB-200-2011, Cars-196, Stanford Online Products -------------------------------------

def _files_bundle(name: str, root: Path, train: list[tuple[str, int]],
                  test: list[tuple[str, int]], image_size: int) -> DataBundle:
    """Relabel each side 0..K-1 (in class-id order) and wrap the files."""
    def relabelled(samples):
        classes = sorted({c for _, c in samples})
        index = {c: i for i, c in enumerate(classes)}
        return [(path, index[c]) for path, c in samples], len(classes)

    train, n_train = relabelled(train)
    test, n_test = relabelled(test)
    check_classes(n_train, n_test, name)
    missing = [p for p, _ in train[:1] + test[:1] if not Path(p).is_file()]
    if missing:
        raise DatasetNotFoundError(f"{name}: image {missing[0]} listed in the annotations is "
                                   f"missing; is dataset.root the extracted archive?")
    train_tf, test_tf = _transforms(image_size, "random_resized", 0, IMAGENET_MEAN, IMAGENET_STD)
    return DataBundle(train=LabelledFiles(train, train_tf), val=LabelledFiles(train, test_tf),
                      test=LabelledFiles(test, test_tf), num_classes=n_train, in_channels=3,
                      image_size=(image_size, image_size), task="retrieval",
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, name=name)


def _need_root(root: str | None, name: str, layout: str) -> Path:
    if root is None:
        raise DatasetNotFoundError(f"dataset={name} needs dataset.root=FOLDER ({layout})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetNotFoundError(f"dataset.root={root} is not a folder ({layout})")
    return path


def _table(path: Path, columns: int, skip_header: bool = False) -> list[list[str]]:
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} is missing")
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    rows = lines[1:] if skip_header else lines
    bad = [r for r in rows if len(r) < columns]
    if bad:
        raise DatasetError(f"{path}: expected {columns} columns, found the line "
                           f"{' '.join(bad[0])!r}")
    return rows


@DATASETS.register("cub200")
def build_cub200(*, root: str | None = None, image_size: int = 224,
                 train_classes: int = 100) -> DataBundle:
    """CUB-200-2011 as published (images.txt, image_class_labels.txt, images/): classes
    1-100 train, 101-200 test (Metrix's dataset/cub.py L8-11)."""
    layout = "the CUB_200_2011 folder holding images.txt, image_class_labels.txt and images/"
    path = _need_root(root, "cub200", layout)
    if not (path / "images.txt").is_file() and (path / "CUB_200_2011").is_dir():
        path = path / "CUB_200_2011"
    images = dict(_table(path / "images.txt", 2))
    labels = dict(_table(path / "image_class_labels.txt", 2))
    samples = [(str(path / "images" / images[i]), int(labels[i])) for i in images]
    return _files_bundle("cub200", path, [s for s in samples if s[1] <= train_classes],
                         [s for s in samples if s[1] > train_classes], image_size)


@DATASETS.register("cars196")
def build_cars196(*, root: str | None = None, image_size: int = 224,
                  train_classes: int = 98) -> DataBundle:
    """Stanford Cars as published for metric learning (cars_annos.mat, car_ims/): classes
    1-98 train, 99-196 test (Metrix's dataset/cars.py L9-12); the annotations' own
    train/test flag is not used."""
    from scipy.io import loadmat

    path = _need_root(root, "cars196", "the folder holding cars_annos.mat and car_ims/")
    annotations = path / "cars_annos.mat"
    if not annotations.is_file():
        raise DatasetNotFoundError(f"{annotations} is missing")
    table = loadmat(str(annotations), squeeze_me=True)["annotations"]
    samples = [(str(path / str(row["relative_im_path"])), int(row["class"]))
               for row in table.reshape(-1)]
    return _files_bundle("cars196", path, [s for s in samples if s[1] <= train_classes],
                         [s for s in samples if s[1] > train_classes], image_size)


@DATASETS.register("sop")
def build_sop(*, root: str | None = None, image_size: int = 224) -> DataBundle:
    """Stanford Online Products as published (Ebay_train.txt, Ebay_test.txt: image_id
    class_id super_class_id path): 11,318 training and 11,316 test classes (Metrix's
    dataset/SOP.py L8-11)."""
    path = _need_root(root, "sop", "the Stanford_Online_Products folder with Ebay_train.txt")
    train, test = ([(str(path / row[3]), int(row[1]))
                    for row in _table(path / f"Ebay_{which}.txt", 4, skip_header=True)]
                   for which in ("train", "test"))
    return _files_bundle("sop", path, train, test, image_size)

