"""Label noise on a classification dataset: class overlap for the temperature-scaling study.

``dataset.label_noise: {p, kind, seed, train, test, test_seed}`` corrupts labels. With
``train`` (the default) it corrupts the training pool - before the validation split is taken
from it, so the validation set that fits the temperature carries the same noise (as in the
study). With ``test`` the test labels get the same noise process, drawn with their own
``test_seed``: the test set then samples the distribution whose classes overlap, and the
evaluation reports every metric against the noisy test labels (``test``) and against the clean
ones (``test_clean``). In every class exactly round(p · n_c) samples are flipped, so
P(noisy label ≠ c | c) = p for each class:

- ``fixed_flip``: class c always becomes (c + 1) mod K (a class permutation: pairs of classes
  overlap);
- ``uniform``: class c becomes one of the other K - 1 classes, uniformly (symmetric noise);
- ``class_map``: class c always becomes m(c), one other class drawn once per class from the
  seed (a map, not always a permutation: two classes may flip to the same one). The noise of
  the study's official code (``LabelNoiseDataset``), which flips each sample independently
  with probability p where we flip exactly round(p · n_c) per class.

The choice depends only on (labels, p, kind, seed), never on the run's seed, so every run of a
sweep sees the same noisy labels. The record (which samples flipped, from what to what, per
split) is written to ``label_noise.json`` in the run folder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mixbench.errors import ConfigError

KINDS = ("fixed_flip", "uniform", "class_map")
LABEL_NOISE_NAME = "label_noise.json"  # the record's file name in the run folder


KEYS = ("p", "kind", "seed", "train", "test", "test_seed")


def check_label_noise(label_noise: dict | None) -> dict | None:
    """The validated settings, or None when there is no noise to add (absent, p = 0, or
    neither split chosen)."""
    if label_noise is None:
        return None
    settings = dict(label_noise)
    unknown = sorted(set(settings) - set(KEYS))
    if unknown:
        raise ConfigError(f"dataset.label_noise has unknown keys {unknown}; its keys are "
                          f"{', '.join(KEYS)}")
    p, kind = settings.get("p", 0.0), settings.get("kind", "uniform")
    if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ConfigError(f"dataset.label_noise.p must be in [0, 1), got {p!r}")
    if kind not in KINDS:
        raise ConfigError(f"dataset.label_noise.kind must be one of {KINDS}, got {kind!r}")
    for key, default in (("seed", 0), ("test_seed", 1)):
        settings[key] = settings.get(key, default)
        if not isinstance(settings[key], int) or isinstance(settings[key], bool):
            raise ConfigError(f"dataset.label_noise.{key} must be an integer, "
                              f"got {settings[key]!r}")
    for key, default in (("train", True), ("test", False)):
        settings[key] = settings.get(key, default)
        if not isinstance(settings[key], bool):
            raise ConfigError(f"dataset.label_noise.{key} must be true or false, "
                              f"got {settings[key]!r}")
    if p == 0 or not (settings["train"] or settings["test"]):
        return None
    return {"p": float(p), "kind": kind, "seed": settings["seed"], "train": settings["train"],
            "test": settings["test"], "test_seed": settings["test_seed"]}


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
    elif kind == "class_map":  # a shift in 1..K-1 per class never maps a class to itself
        mapped = (torch.arange(num_classes)
                  + torch.randint(1, num_classes, (num_classes,), generator=gen)) % num_classes
        noisy[index] = mapped[labels[index]]
    else:  # a shift in 1..K-1 never lands on the true class
        shift = torch.randint(1, num_classes, (len(index),), generator=gen)
        noisy[index] = (labels[index] + shift) % num_classes
    return noisy, index


@dataclass
class NoisyLabels:
    """A dataset's labels after ``dataset.label_noise``."""

    pool: torch.Tensor  # the training pool (train + val)
    test: torch.Tensor
    test_clean: torch.Tensor | None  # the test labels as published, when ``test`` changed them
    record: dict[str, Any] | None  # what label_noise.json holds; None: no noise


def _flip(labels: torch.Tensor, num_classes: int, settings: dict, seed: int,
          where=None) -> tuple[torch.Tensor, dict[str, Any]]:
    noisy, index = corrupt_labels(labels, num_classes, p=settings["p"], kind=settings["kind"],
                                  seed=seed)
    position = index if where is None else torch.as_tensor(where)[index]
    return noisy, {"seed": seed, "size": len(labels), "flipped": len(index),
                   "index": position.tolist(), "clean": labels[index].tolist(),
                   "noisy": noisy[index].tolist()}


def apply_label_noise(pool_labels, test_labels, num_classes: int, label_noise: dict | None,
                      pool_index=None, test_index=None) -> NoisyLabels:
    """The configured noise on the training pool (``train``) and the test labels (``test``),
    each drawn from its own seed. ``pool_index`` / ``test_index`` say where each sample sits
    in the dataset's own order (e.g. the rows of scikit-learn's digits in each split); the
    record uses them, so a flipped sample can be found in the original files."""
    pool = torch.as_tensor(pool_labels, dtype=torch.long)
    test = torch.as_tensor(test_labels, dtype=torch.long)
    settings = check_label_noise(label_noise)
    if settings is None:
        return NoisyLabels(pool, test, None, None)
    record = {"p": settings["p"], "kind": settings["kind"], "num_classes": num_classes}
    if settings["train"]:
        pool, record["train"] = _flip(pool, num_classes, settings, settings["seed"], pool_index)
    clean = None
    if settings["test"]:
        clean = test
        test, record["test"] = _flip(test, num_classes, settings, settings["test_seed"],
                                     test_index)
    return NoisyLabels(pool, test, clean, record)
