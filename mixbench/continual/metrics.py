"""The numbers of continual learning, from the accuracy matrix ``acc[i][j]``: accuracy on the
test samples of step j's classes after training step i (entries above the diagonal are not
defined and are ignored)."""
from __future__ import annotations

import numpy as np


def seen_accuracy(acc_matrix, sizes=None) -> list[float]:
    """Per step i, the accuracy on all classes seen so far: the mean of row i up to the
    diagonal, weighted by ``sizes`` (test samples per step; equal when None)."""
    acc = np.asarray(acc_matrix, dtype=float)
    weights = np.ones(len(acc)) if sizes is None else np.asarray(sizes, dtype=float)
    return [float(np.average(acc[i, :i + 1], weights=weights[:i + 1])) for i in range(len(acc))]


def continual_metrics(acc_matrix, sizes=None) -> dict:
    """``avg_incremental_acc``: the mean over steps of the accuracy on all seen classes, first
    step included (PyCIL's "average accuracy"); ``final_avg_acc``: that accuracy after the last
    step; ``forgetting``: the mean over the old steps of the best accuracy they had before the
    last step minus their final accuracy (Chaudhry et al.); ``bwt``: the mean over the old
    steps of their final accuracy minus their accuracy right after they were learned
    (Lopez-Paz & Ranzato). With a single step there are no old steps: forgetting and bwt are
    None."""
    acc = np.asarray(acc_matrix, dtype=float)
    if acc.ndim != 2 or acc.shape[0] != acc.shape[1] or len(acc) == 0:
        raise ValueError(f"acc_matrix must be T×T with T ≥ 1, got shape {acc.shape}")
    if sizes is not None and len(sizes) != len(acc):
        raise ValueError(f"sizes has {len(sizes)} entries for {len(acc)} steps")
    seen = seen_accuracy(acc, sizes)
    last = len(acc) - 1
    old = range(last)
    return {
        "avg_incremental_acc": float(np.mean(seen)),
        "final_avg_acc": seen[-1],
        "forgetting": float(np.mean([acc[j:last, j].max() - acc[last, j] for j in old]))
        if last else None,
        "bwt": float(np.mean([acc[last, j] - acc[j, j] for j in old])) if last else None,
    }
