"""Other views of the bundled and local image sets, all 28×28 grey: separate tasks for one
model (model merging fine-tunes one base on each). Each is its source dataset with every
split's images changed the same way; labels, splits and label noise are the source's.

- ``fashion_mnist_rotated``: Fashion-MNIST turned by ``quarter_turns`` × 90° (default 1);
- ``fashion_mnist_inverted``: Fashion-MNIST with its grey levels inverted (255 − x);
- ``digits28``: scikit-learn's 8×8 digits upsampled to 28×28 (bilinear).

``max_train`` keeps a class-stratified subset of the training split (fixed by
``split_seed``; all of it when it has fewer), so a CPU can fine-tune on every task in
minutes."""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import torch
import torch.nn.functional as F

from mixbench.data.bundle import DataBundle, Split, limit_train
from mixbench.data.digits import build_digits
from mixbench.data.vision import build_fashion_mnist
from mixbench.errors import ConfigError
from mixbench.registry import DATASETS


def with_images(bundle: DataBundle, change: Callable[[torch.Tensor], torch.Tensor],
                max_train: int | None = None, split_seed: int = 0) -> DataBundle:
    """``bundle`` with ``change`` applied to the uint8 images of every split, the
    normalisation statistics recomputed on the changed training images."""
    bundle = limit_train(bundle, max_train, split_seed)
    splits = {name: Split(change(split.x), split.y) for name, split in bundle.splits().items()}
    train = splits["train"]
    scaled = train.x.float() / 255.0
    return dataclasses.replace(bundle, train=train, val=splits["val"], test=splits["test"],
                               image_size=tuple(train.x.shape[-2:]),
                               mean=(scaled.mean().item(),), std=(scaled.std().item(),))


def source_bundle(builder: Callable[..., DataBundle], view: str, options: dict) -> DataBundle:
    """The source dataset built with the view's remaining options, which must be its own."""
    known = set(inspect.signature(builder).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"dataset={view} has no option {', '.join(unknown)}; its options are "
                          f"those of its source ({', '.join(sorted(known))}) and max_train")
    return builder(**options)


def rotate(quarter_turns: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.rot90(x, quarter_turns, dims=(-2, -1)).contiguous()


def invert(x: torch.Tensor) -> torch.Tensor:
    return 255 - x


def upsample(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def change(x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
        return up.round().clamp(0, 255).to(torch.uint8)
    return change


@DATASETS.register("fashion_mnist_rotated")
def build_fashion_mnist_rotated(*, quarter_turns: int = 1, max_train: int | None = None,
                                **source) -> DataBundle:
    if quarter_turns % 4 == 0:
        raise ConfigError(f"dataset.quarter_turns={quarter_turns} turns the images back to "
                          f"Fashion-MNIST: use 1, 2 or 3")
    return with_images(source_bundle(build_fashion_mnist, "fashion_mnist_rotated", source),
                       rotate(quarter_turns), max_train, source.get("split_seed", 0))


@DATASETS.register("fashion_mnist_inverted")
def build_fashion_mnist_inverted(*, max_train: int | None = None, **source) -> DataBundle:
    return with_images(source_bundle(build_fashion_mnist, "fashion_mnist_inverted", source),
                       invert, max_train, source.get("split_seed", 0))


@DATASETS.register("digits28")
def build_digits28(*, image_size: int = 28, max_train: int | None = None,
                   **source) -> DataBundle:
    return with_images(source_bundle(build_digits, "digits28", source), upsample(image_size),
                       max_train, source.get("split_seed", 0))
