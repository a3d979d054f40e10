"""The baselines: task arithmetic, TIES-merging and DARE. Each returns θ₀ + the merged task
vector, with FusionBench's defaults (scale 0.3, TIES keeping the top 20% magnitudes, DARE
dropping half the entries).

TIES's disjoint merge defaults to ``merge="mean"``, the TIES paper's (and its official
code's) average over the tasks that agree with the elected sign; FusionBench's config default
``merge_func: sum`` is ``merge="sum"``."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from torch import Tensor

from mixbench.registry import MERGERS
from mixbench.merging.order import FlatOrder, group_dtype, group_size
from mixbench.merging.task_vectors import (THRESHOLDS, StateDict, TaskVectors, assemble,
                                           check_choice, check_fraction, finish, kept_count,
                                           merged_names, task_scales, threshold_groups)

MERGES = ("mean", "sum")
THEN = ("ta", "ties")


@MERGERS.register("task_arithmetic")
def task_arithmetic(base: StateDict, finetuned: Sequence[StateDict], *,
                    scale: float | Sequence[float] = 0.3,
                    keys: Iterable[str] | None = None) -> dict[str, Tensor]:
    """θ₀ + Σ_i scale_i·τ_i (Ilharco et al.)."""
    names = merged_names(base, finetuned, keys)
    return _task_arithmetic(TaskVectors(base, finetuned), names,
                            task_scales(scale, len(finetuned)))


@MERGERS.register("ties")
def ties_merging(base: StateDict, finetuned: Sequence[StateDict], *, top_k: float = 0.2,
                 scale: float | Sequence[float] = 0.3, merge: str = "mean",
                 thresholds: str = "global",
                 keys: Iterable[str] | None = None) -> dict[str, Tensor]:
    """TIES-merging (Yadav et al.): per task keep the ``top_k`` fraction of largest |τ_i|
    (over the whole model, or each tensor with ``thresholds="per_tensor"``), elect each
    entry's sign as that of Σ_i scale_i·(trimmed τ_i), and average (``merge="mean"``) or add
    (``"sum"``) the scaled trimmed entries that agree with it (0 where none does, including
    where the sum is exactly 0); θ₀ + that."""
    _check_ties(top_k, merge, thresholds)
    names = merged_names(base, finetuned, keys)
    return _ties(TaskVectors(base, finetuned), names, top_k, task_scales(scale, len(finetuned)),
                 merge, thresholds)


@MERGERS.register("dare")
def dare(base: StateDict, finetuned: Sequence[StateDict], *, p: float = 0.5,
         scale: float | Sequence[float] = 0.3, then: str = "ta", seed: int = 0,
         top_k: float = 0.2, merge: str = "mean", thresholds: str = "global",
         keys: Iterable[str] | None = None) -> dict[str, Tensor]:
    """DARE (Yu et al.): drop each entry of each τ_i with probability ``p`` and rescale the
    kept ones by 1/(1 − p), then task arithmetic (``then="ta"``) or TIES (``"ties"``, with
    ``top_k``, ``merge`` and ``thresholds``). The masks come from ``seed``, the task's
    position and the tensor's name, so the result is the same on every device; listing the
    models in another order draws other masks (same distribution)."""
    check_fraction("p", p, zero_ok=True, one_ok=False)
    check_choice("then", then, THEN)
    _check_ties(top_k, merge, thresholds)
    names = merged_names(base, finetuned, keys)
    vectors = TaskVectors(base, finetuned, drop=p, seed=seed)
    scales = task_scales(scale, len(finetuned))
    if then == "ta":
        return _task_arithmetic(vectors, names, scales)
    return _ties(vectors, names, top_k, scales, merge, thresholds)


def _check_ties(top_k: float, merge: str, thresholds: str) -> None:
    check_fraction("top_k", top_k)
    check_choice("merge", merge, MERGES)
    check_choice("thresholds", thresholds, THRESHOLDS)


def _task_arithmetic(vectors: TaskVectors, names: Sequence[str],
                     scales: Sequence[float]) -> dict[str, Tensor]:
    merged = {}
    for name in names:
        delta = vectors.of(0, name).mul_(scales[0])
        for task in range(1, len(vectors)):
            delta.add_(vectors.of(task, name), alpha=scales[task])
        merged[name] = finish(vectors.base[name], delta)
    return assemble(vectors.base, merged)


def _ties(vectors: TaskVectors, names: Sequence[str], top_k: float, scales: Sequence[float],
          merge: str, thresholds: str) -> dict[str, Tensor]:
    merged = {}
    for group in threshold_groups(names, thresholds):
        cutoffs = magnitude_cutoffs(vectors, group, top_k)
        for name in group:
            def trimmed(task: int) -> Tensor:
                return trim(vectors.of(task, name), cutoffs[task], scales[task])
            merged[name] = finish(vectors.base[name], disjoint_merge(trimmed, len(vectors),
                                                                     merge))
    return assemble(vectors.base, merged)


def magnitude_cutoffs(vectors: TaskVectors, group: Sequence[str], top_k: float) -> list[float]:
    """Per task, the k-th largest |τ_i| over the group's entries (k = ``top_k`` of them): the
    entries at or above it survive the trim (as TIES's ``topk_values_mask``; ties at the
    cutoff all survive)."""
    size = group_size(vectors.base, group)
    flat = FlatOrder(size, group_dtype(vectors.base, group))
    position = size - kept_count(top_k, size)
    return [flat.select((vectors.of(task, name).abs() for name in group), [position])[0]
            for task in range(len(vectors))]


def trim(tau: Tensor, cutoff: float, scale: float) -> Tensor:
    return (tau * scale).masked_fill_(tau.abs() < cutoff, 0)


def disjoint_merge(trimmed: Callable[[int], Tensor], tasks: int, merge: str) -> Tensor:
    """TIES's sign election and disjoint merge of one tensor. ``trimmed(i)`` is recomputed
    on each pass rather than kept, so one task's tensor exists at a time."""
    elected = trimmed(0)
    for task in range(1, tasks):
        elected.add_(trimmed(task))
    elected.sign_()
    total = elected.new_zeros(elected.shape)
    agreeing = elected.new_zeros(elected.shape)
    for task in range(tasks):
        entries = trimmed(task)
        agrees = (entries.sign() == elected) & (entries != 0)
        total.add_(entries.masked_fill_(~agrees, 0))
        agreeing.add_(agrees)
    return total if merge == "sum" else total.div_(agreeing.clamp_(min=1))
