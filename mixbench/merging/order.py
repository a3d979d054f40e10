"""Exact order statistics of one task's entries over a group of tensors (the whole model by
default), without holding N flattened task vectors.

``torch.quantile`` refuses inputs of more than 16M entries, and ``torch.kthvalue`` /
``torch.sort`` allocate a copy plus int64 indices (three times the vector). Here the group's
entries are written, tensor by tensor, into one flat CPU buffer that is reused for every task,
and numpy's introselect partitions that buffer in place: one model's worth of work memory,
whatever the device the tensors live on."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor


def group_size(base: Mapping[str, Tensor], group: Sequence[str]) -> int:
    return sum(base[name].numel() for name in group)


def group_dtype(base: Mapping[str, Tensor], group: Sequence[str]) -> torch.dtype:
    """float64 when any tensor of the group is float64 (its values must stay exact), else
    float32 (what task vectors are computed in)."""
    wide = any(base[name].dtype == torch.float64 for name in group)
    return torch.float64 if wide else torch.float32


class FlatOrder:
    """One flat buffer of a group's ``size`` entries, refilled for each task."""

    def __init__(self, size: int, dtype: torch.dtype):
        self.values = torch.empty(size, dtype=dtype)

    def select(self, chunks: Iterable[Tensor], positions: Sequence[int]) -> list[float]:
        """The entries at ``positions`` (0-based, ascending order) of ``chunks`` put end to
        end; the chunks must fill the buffer exactly."""
        offset = 0
        for chunk in chunks:
            end = offset + chunk.numel()
            self.values[offset:end] = chunk.reshape(-1)
            offset = end
        if offset != len(self.values):
            raise RuntimeError(f"the chunks hold {offset} entries for a buffer of "
                               f"{len(self.values)}")
        array = self.values.numpy()
        array.partition(sorted(set(positions)))  # in place: no copy, no index array
        return [float(array[p]) for p in positions]
