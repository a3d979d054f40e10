"""Label noise on a classification training set: class overlap for the temperature-scaling study.

``dataset.label_noise: {p, kind, seed}`` corrupts the labels of the training pool - before the
validation split is taken from it, so the validation set that fits the temperature carries the
same noise (as in the study); the test set stays clean. In every class exactly round(p · n_c)
samples are flipped, so P(noisy label ≠ c | c) = p for each class:

- ``fixed_flip``: class c always becomes (c + 1) mod K (a class permutation: pairs of classes
  overlap);
- ``uniform``: class c becomes one of the other K - 1 classes, uniformly (symmetric noise).

The choice depends only on (labels, p, kind, seed), never on the run's seed, so every run of a
sweep sees the same noisy labels. The record (which samples flipped, from what to what) is
written to ``label_noise.json`` in the run folder."""
from __future__ import annotations

from typing import Any

import torch

from mixbench.errors import ConfigError

KINDS = ("fixed_flip", "uniform")
LABEL_NOISE_NAME = "label_noise.json"  # the record's file name in the run folder


def check_label_noise(label_noise: dict | None) -> dict | None:
    """The validated settings, or None when there is no noise to add (absent or p = 0)."""
    if label_noise is None:
        return None
    settings = dict(label_noise)
    unknown = sorted(set(settings) - {"p", "kind", "seed"})
    if unknown:
        raise ConfigError(f"dataset.label_noise has unknown keys {unknown}; its keys are p, kind, "
                          f"seed")
    p, kind, seed = settings.get("p", 0.0), settings.get("kind", "uniform"), settings.get("seed", 0)
    if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ConfigError(f"dataset.label_noise.p must be in [0, 1), got {p!r}")
    if kind not in KINDS:
        raise ConfigError(f"dataset.label_noise.kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(seed, int):
        raise ConfigError(f"dataset.label_noise.seed must be an integer, got {seed!r}")
    return None if p == 0 else {"p": float(p), "kind": kind, "seed": seed}


def corrupt_labels(labels: torch.Tensor, num_classes: int, *, p: float, kind: str,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy labels, positions flipped). ``labels`` is not modified."""
    if num_classes < 2:
        raise ConfigError("dataset.label_noise needs at least 2 classes")
    labels = torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    flipped = []
    for c in range(num_classes):  # per class, so every class loses exactly a fraction p
        members = torch.nonzero(labels == c).flatten()
        count = round(p * len(members))
        flipped.append(members[torch.randperm(len(members), generator=gen)[:count]])
    index = torch.cat(flipped).sort().values
    noisy = labels.clone()
    if kind == "fixed_flip":
        noisy[index] = (labels[index] + 1) % num_classes
    else:  # a shift in 1..K-1 never lands on the true class
        shift = torch.randint(1, num_classes, (len(index),), generator=gen)
        noisy[index] = (labels[index] + shift) % num_classes
    return noisy, index


def noisy_labels(labels, num_classes: int, label_noise: dict | None,
                 pool_index=None) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """Labels of a training pool with the configured noise, and the record to save.

    ``pool_index`` says where each pool sample sits in the dataset's own order (e.g. the
    rows of scikit-learn's digits that are not in the test split); the record uses it, so a
    flipped sample can be found in the original files."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    settings = check_label_noise(label_noise)
    if settings is None:
        return labels, None
    noisy, index = corrupt_labels(labels, num_classes, **settings)
    where = index if pool_index is None else torch.as_tensor(pool_index)[index]
    record = {**settings, "num_classes": num_classes, "pool_size": len(labels),
              "flipped": len(index), "index": where.tolist(),
              "clean": labels[index].tolist(), "noisy": noisy[index].tolist()}
    return noisy, record
