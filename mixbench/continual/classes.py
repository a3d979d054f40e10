"""Classes arriving in steps: the class order, the steps' class ranges, and splits relabelled
so that the classes of step t are labels seen_{t-1} .. seen_t - 1 (earlier steps have the
smaller labels, as PyCIL and Avalanche number them)."""
from __future__ import annotations

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
