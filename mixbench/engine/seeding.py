"""Seeding. The trainer reseeds every RNG at the start of each epoch from (seed, epoch), so an
epoch's shuffling, mixing and augmentation depend on nothing else: a run resumed from the
checkpoint of epoch e replays epoch e+1 exactly, without having to save RNG states."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # for third-party code; mixbench's hot path uses torch only
    torch.manual_seed(seed)  # also seeds every CUDA device


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch) % 2**63
