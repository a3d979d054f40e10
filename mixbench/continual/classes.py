"""Classes arriving in steps: the class order, the steps' class ranges, and splits relabelled
so that the classes of step t are labels seen_{t-1} .. seen_t - 1 (earlier steps have the
smaller labels, as PyCIL and Avalanche number them)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from mixbench.data.bundle import Split
from mixbench.errors import ConfigError


def class_order(num_classes: int, seed: int | None) -> list[int]:
    """The order classes arrive in: a permutation drawn from ``seed`` as PyCIL draws it
    (``np.random.seed(seed); np.random.permutation``), the same for every method and run
    seed; None keeps 0..K-1."""
    if seed is None:
        return list(range(num_classes))
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def step_sizes(num_classes: int, initial: int, increment: int) -> list[int]:
    """Classes per step: ``initial``, then ``increment`` until all are in (the last step takes
    what is left)."""
    if not 1 <= initial <= num_classes or increment < 1:
        raise ConfigError(f"protocol.initial must be in 1..{num_classes} and protocol.increment "
                          f">= 1, got initial={initial}, increment={increment}")
    sizes = [initial]
    while sum(sizes) < num_classes:
        sizes.append(min(increment, num_classes - sum(sizes)))
    return sizes


def relabel(split: Split, order: list[int]) -> Split:
    """``split`` with class ``order[k]`` renamed k."""
    if not isinstance(split, Split):
        raise ConfigError("continual protocols need an in-memory dataset (digits, "
                          "fashion_mnist, cifar10, cifar100); image folders are read from "
                          "disk batch by batch")
    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))
    return Split(split.x, position[split.y])


def rows_of(split: Split, low: int, high: int) -> torch.Tensor:
    """The rows of a relabelled split whose class is in [low, high)."""
    return torch.nonzero((split.y >= low) & (split.y < high)).flatten()


@dataclass
class ClassSteps:
    """A dataset cut into steps of classes: the order the classes arrive in, each step's label
    range [low, high), and the splits relabelled in that order."""

    order: list[int]
    ranges: list[tuple[int, int]]
    data: object  # the DataBundle with relabelled splits

    @classmethod
    def of(cls, data, seed: int | None, initial: int, increment: int) -> "ClassSteps":
        order = class_order(data.num_classes, seed)
        ranges, low = [], 0
        for size in step_sizes(data.num_classes, initial, increment):
            ranges.append((low, low + size))
            low += size
        relabelled = dataclasses.replace(data, **{name: relabel(split, order)
                                                  for name, split in data.splits().items()})
        return cls(order, ranges, relabelled)

    def classes(self, step: int) -> list[int]:
        """The original ids of a step's classes."""
        low, high = self.ranges[step]
        return self.order[low:high]

    def seen(self, step: int, train_rows: torch.Tensor | None = None):
        """The data of a step: ``train_rows`` of the training split (all of it when None),
        the validation and test samples of every class seen by the end of the step."""
        data, high = self.data, self.ranges[step][1]
        train = data.train if train_rows is None else data.train.subset(train_rows)
        return dataclasses.replace(data, train=train,
                                   val=data.val.subset(rows_of(data.val, 0, high)),
                                   test=data.test.subset(rows_of(data.test, 0, high)))
