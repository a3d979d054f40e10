"""The order in which a test-time adaptation method sees the test set, as the UnMix-TNS code
(after the test-time-adaptation toolbox it builds on) makes its streams.

* ``iid_order``: a shuffle.
* ``dirichlet_order``: label-correlated, NOTE's sampler. The samples are cut into as many chunks
  as there are classes; each class spreads over the chunks by proportions drawn from
  Dir(δ·1), zeroing chunks that already hold their share (N / #chunks); the draw is repeated
  until every chunk holds at least ``min_chunk`` samples. The stream is the chunks one after
  another, each chunk's classes in a random order. Small δ gives long runs of one class.
* ``continual``: one corruption after another, each in its own order (the toolbox's
  ``correlated`` setting and its single-domain variant).
* ``mixed``: the samples of all corruptions shuffled together, optionally then ordered by the
  Dirichlet sampler over their labels (``mixed_domains`` / ``mixed_domains_correlated``).

The orders are drawn with a numpy ``Generator`` seeded by ``seed``: they are built once, off the
training path, and numpy's Dirichlet stays finite for the small δ used (0.01), where normalised
Gamma draws underflow to 0/0."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mixbench.errors import ConfigError

MAX_DIRICHLET_TRIES = 10_000  # the reference retries for 120 s, then gives up


def _labels_array(labels) -> np.ndarray:
    array = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer) or array.min(initial=0) < 0:
        raise ValueError(f"labels must be a 1-D array of non-negative integers, got "
                         f"{array.dtype} of shape {array.shape}")
    return array


def _as_index(order: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(order, dtype=np.int64))


def iid_order(labels, seed: int) -> torch.Tensor:
    """A uniformly shuffled order of the ``len(labels)`` test samples (int64 indices)."""
    return _as_index(np.random.default_rng(seed).permutation(len(_labels_array(labels))))


def _open_proportions(delta: float, open_chunks: np.ndarray, rng: np.random.Generator,
                      ) -> np.ndarray:
    """Dir(δ·1) proportions with the full chunks zeroed, renormalised. At small δ a draw can
    put all its mass on full chunks (the reference then divides 0 by 0); draw again then."""
    while True:
        proportions = rng.dirichlet(np.full(len(open_chunks), delta)) * open_chunks
        if proportions.sum() > 0:
            return proportions / proportions.sum()


def _split_by_dirichlet(labels: np.ndarray, delta: float, rng: np.random.Generator,
                        ) -> list[list[np.ndarray]]:
    """One draw: ``chunks[j][k]`` = the indices of class k that go to chunk j."""
    num_chunks = int(labels.max()) + 1
    share = len(labels) / num_chunks
    sizes = np.zeros(num_chunks, dtype=np.int64)
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_chunks)]
    for k in range(num_chunks):
        members = rng.permutation(np.flatnonzero(labels == k))
        proportions = _open_proportions(delta, sizes < share, rng)
        cuts = (np.cumsum(proportions) * len(members)).astype(int)[:-1]
        for j, part in enumerate(np.split(members, cuts)):
            chunks[j].append(part)
            sizes[j] += len(part)
    return chunks


def dirichlet_chunks(labels, delta: float, seed: int, min_chunk: int = 10,
                     ) -> list[torch.Tensor]:
    """The chunks of ``dirichlet_order`` (their concatenation is the order), each at least
    ``min_chunk`` samples long."""
    labels = _labels_array(labels)
    if delta <= 0:
        raise ConfigError(f"the Dirichlet concentration delta must be > 0, got {delta}")
    num_chunks = int(labels.max()) + 1
    if num_chunks * min_chunk > len(labels):
        raise ConfigError(f"{len(labels)} samples cannot fill {num_chunks} chunks (one per "
                          f"class) of at least min_chunk={min_chunk}")
    rng = np.random.default_rng(seed)
    for _ in range(MAX_DIRICHLET_TRIES):
        chunks = _split_by_dirichlet(labels, delta, rng)
        if min(sum(len(part) for part in chunk) for chunk in chunks) >= min_chunk:
            break
    else:
        raise ConfigError(f"no Dirichlet split with every chunk >= {min_chunk} samples in "
                          f"{MAX_DIRICHLET_TRIES} tries at delta={delta}; raise delta or lower "
                          f"min_chunk")
    # within a chunk, its classes come one after another in a random order
    return [_as_index(np.concatenate([chunk[k] for k in rng.permutation(len(chunk))]))
            for chunk in chunks]


def dirichlet_order(labels, delta: float, seed: int, min_chunk: int = 10) -> torch.Tensor:
    """A label-correlated order of all test samples (int64 indices, a permutation), as NOTE's
    Dirichlet sampler makes it; δ is 0.1 for CIFAR-10-C and 0.01 for CIFAR-100-C in UnMix-TNS."""
    return torch.cat(dirichlet_chunks(labels, delta, seed, min_chunk))


@dataclass(frozen=True)
class Stream:
    """A test stream over several corruptions of one test set: item i is sample ``index[i]``
    of corruption ``corruptions[domain[i]]``."""

    corruptions: tuple[str, ...]
    domain: torch.Tensor  # int64, positions in ``corruptions``
    index: torch.Tensor  # int64, positions in the test set

    def __len__(self) -> int:
        return len(self.index)

    def pairs(self) -> list[tuple[str, int]]:
        """The stream as (corruption, sample index) pairs."""
        return [(self.corruptions[d], i) for d, i in zip(self.domain.tolist(),
                                                          self.index.tolist())]


def _order(labels, delta: float | None, seed: int, min_chunk: int) -> torch.Tensor:
    if delta is None:
        return iid_order(labels, seed)
    return dirichlet_order(labels, delta, seed, min_chunk)


def _seeds(seed: int, count: int) -> list[int]:
    """Independent seeds for ``count`` sub-streams, fixed by ``seed``."""
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(child.generate_state(1)[0]) for child in children]


def _check_corruptions(corruptions) -> tuple[str, ...]:
    corruptions = tuple(corruptions)
    if not corruptions or len(set(corruptions)) != len(corruptions):
        raise ConfigError(f"corruptions must be a non-empty list without repeats, got "
                          f"{list(corruptions)}")
    return corruptions


def continual(labels, corruptions, seed: int, delta: float | None = None,
              min_chunk: int = 10) -> Stream:
    """The corruptions one after another, in the given order; within each, the test samples
    shuffled (``delta=None``) or Dirichlet-ordered, with a different order per corruption."""
    corruptions = _check_corruptions(corruptions)
    orders = [_order(labels, delta, s, min_chunk) for s in _seeds(seed, len(corruptions))]
    domain = torch.cat([torch.full((len(o),), d, dtype=torch.int64) for d, o in enumerate(orders)])
    return Stream(corruptions, domain, torch.cat(orders))


def mixed(labels, corruptions, seed: int, delta: float | None = None,
          min_chunk: int = 10) -> Stream:
    """Every (corruption, sample) pair once, all corruptions shuffled together; with
    ``delta``, the shuffled pairs are then Dirichlet-ordered by their labels."""
    corruptions = _check_corruptions(corruptions)
    labels = _labels_array(labels)
    n = len(labels)
    shuffle_seed, order_seed = _seeds(seed, 2)
    pairs = np.random.default_rng(shuffle_seed).permutation(n * len(corruptions))
    if delta is not None:
        pairs = pairs[dirichlet_order(labels[pairs % n], delta, order_seed, min_chunk).numpy()]
    pairs = _as_index(pairs)
    return Stream(corruptions, pairs // n, pairs % n)
