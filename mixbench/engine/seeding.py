"""Seeding. The trainer reseeds every RNG at the start of each epoch from (seed, epoch), so an
epoch's shuffling, mixing and augmentation depend on nothing else: a run resumed from the
checkpoint of epoch e replays epoch e+1 exactly, without having to save RNG states."""
from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # for third-party code; mixbench's hot path uses torch only
    torch.manual_seed(seed)  # also seeds every CUDA device


def derive_seed(seed: int, *keys: int | str) -> int:
    """A distinct seed per (run seed, keys): ``derive_seed(seed, epoch)`` for an epoch,
    ``derive_seed(seed, "eval", k)`` for the k-th evaluation network. Each key is folded in
    turn (a string by its CRC-32), so a named family of seeds never meets the integer ones of
    epochs or iterations however many there are."""
    for key in keys:
        value = zlib.crc32(key.encode()) if isinstance(key, str) else int(key)
        seed = (seed * 1_000_003 + value) % 2**63
    return seed
