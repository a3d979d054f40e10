"""PCB-merging (Du et al., NeurIPS 2024): each task's entries get a score from their weight
within the task (intra-balancing) and their agreement with the other tasks (inter-balancing);
per task the top ``ratio`` of scores is kept, and the merged task vector is the score-weighted
average of the task vectors.

``form="official"`` computes what the authors' ``PCB_merge`` (pcb-merging.py L31-45) does,
which is what reproduces their numbers:
    |τ̃_i| = |τ_i| clipped to its [c, 1 − c] order statistics;  τ̃_i = sign(τ_i)·|τ̃_i|
    intra_i = exp(N·minmax(|τ̃_i|)²)           (a softmax's numerator; its denominator is a
                                                per-task constant that the later min-max drops)
    inter_i = tanh(τ_i ⊙ Σ_j τ_j)              (the raw τ, not τ̃: L38 uses ``all_checks``)
    β̂_i = minmax of intra_i ⊙ inter_i over its kept top-``ratio`` entries, 0 elsewhere
    τ_m = Σ_i scale_i·τ̃_i·β̂_i / max(Σ_i β̂_i, 1e-12)
Two index details differ on purpose, to keep what the formulas say: the clip bounds are the
entries at positions m and D − 1 − m of the sorted |τ_i| (m = ⌊c·D⌋), where L23's
``int(d·(1 − c) − 1)`` clips one more entry at the top when c·D is not an integer; and exactly
⌊ratio·D⌋ entries are kept (normalised by the largest dropped score), where L42's clamp at
position ⌊(1 − ratio)·D⌋ keeps one fewer. Both touch only the entries at the cuts (and shift
the min-max scales slightly).

``form="paper"`` uses the paper's formulas, with Norm = min-max (the official ``normalize``):
    β_i = Softmax(N·Norm(τ_i ⊙ τ_i)) ⊙ Σ_j Softmax(Norm(τ_i ⊙ τ_j)),  β̂_i = top-``ratio`` of β_i
    τ_m = Σ_i scale_i·τ_i·β̂_i / Σ_i β̂_i        (no clipping, ``clip`` is not used)
The softmaxes run over the threshold group's D entries and are computed as D·softmax (mean 1):
the constant D² cancels in τ_m and keeps the scores far from float32's underflow.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from mixbench.registry import MERGERS
from mixbench.merging.order import FlatOrder, group_dtype, group_size
from mixbench.merging.task_vectors import (StateDict, TaskVectors, assemble, check_choice,
                                           check_fraction, count_of, finish, kept_count,
                                           merged_names, task_scales, threshold_groups)

FORMS = ("official", "paper")


@MERGERS.register("pcb")
def pcb_merging(base: StateDict, finetuned: Sequence[StateDict], *, ratio: float = 0.1,
                scale: float | Sequence[float] = 1.0, clip: float = 1e-4,
                form: str = "official", thresholds: str = "global",
                keys: Iterable[str] | None = None) -> dict[str, Tensor]:
    """θ₀ + τ_m of PCB-merging (see the module docstring). ``ratio`` is the kept fraction
    (0.05 for the official ViT runs, 0.1 for T5); ``scale`` the λ_i inside the sum (the
    official vision code uses 1.2 per task); ``clip`` the fraction clipped at each end of
    each |τ_i| (the official form only). With ``thresholds="global"`` every order statistic,
    min-max and softmax runs over the whole flattened model, as in the official code."""
    names, vectors = _prepare(base, finetuned, ratio, clip, form, keys)
    scales = task_scales(scale, len(finetuned))
    merged = {}
    for group in threshold_groups(names, thresholds):
        plan = PLANS[form](vectors, group, ratio, clip)
        for name in group:
            merged[name] = finish(base[name], merge_tensor(plan, name, scales))
            plan.release(name)
    return assemble(base, merged)


def pcb_scores(base: StateDict, finetuned: Sequence[StateDict], *, ratio: float = 0.1,
               clip: float = 1e-4, form: str = "official", thresholds: str = "global",
               keys: Iterable[str] | None = None) -> list[dict[str, Tensor]]:
    """Per task, the weights β̂_i that ``pcb_merging`` gives its entries: 0 where dropped;
    on the kept entries the min-max-normalised scores in (0, 1] (official form) or the
    scores D²·β_i (paper form). For inspection: it holds N models' worth of scores."""
    names, vectors = _prepare(base, finetuned, ratio, clip, form, keys)
    scores: list[dict[str, Tensor]] = [{} for _ in finetuned]
    for group in threshold_groups(names, thresholds):
        plan = PLANS[form](vectors, group, ratio, clip)
        for name in group:
            for task in range(len(vectors)):
                scores[task][name] = plan.weights(task, name)[1]
            plan.release(name)
    return scores


def _prepare(base, finetuned, ratio, clip, form, keys) -> tuple[list[str], TaskVectors]:
    check_fraction("ratio", ratio)
    check_fraction("clip", clip, zero_ok=True, one_ok=False, top=0.5)
    check_choice("form", form, FORMS)
    return merged_names(base, finetuned, keys), TaskVectors(base, finetuned)


def kept_cut(flat: FlatOrder, scores: Iterable[Tensor], keep: int) -> tuple[float, float]:
    """(the largest dropped score, the largest score) of one task over a group, keeping the
    ``keep`` largest; (−inf, inf) when all are kept (nothing to compute)."""
    size = len(flat.values)
    if keep == size:
        return -math.inf, math.inf
    dropped, top = flat.select(scores, [size - keep - 1, size - 1])
    return dropped, top


def merge_tensor(plan: OfficialPlan | PaperPlan, name: str, scales: Sequence[float]) -> Tensor:
    """Σ_i scale_i·τ_i·β̂_i / Σ_i β̂_i of one tensor, with the plan's τ_i and β̂_i (L43-44)."""
    weighted = weights_sum = None
    for task, scale in enumerate(scales):
        tau, weights = plan.weights(task, name)
        term = tau * weights * scale
        weighted = term if weighted is None else weighted.add_(term)
        weights_sum = weights.clone() if weights_sum is None else weights_sum.add_(weights)
    return weighted.div_(weights_sum.clamp_(min=plan.floor))


class OfficialPlan:
    """The official form over one group: Σ_j τ_j kept per tensor (one model's worth, in the
    slot the output takes later), then per task its clip bounds and its score cut."""

    floor = 1e-12  # pcb-merging.py L44

    def __init__(self, vectors: TaskVectors, group: Sequence[str], ratio: float, clip: float):
        self.vectors = vectors
        self.total = {name: self._sum(name) for name in group}
        size = group_size(vectors.base, group)
        flat = FlatOrder(size, group_dtype(vectors.base, group))
        margin = count_of(clip, size)
        keep = kept_count(ratio, size)
        self.bounds: list[tuple[float, float]] = []
        self.cuts: list[tuple[float, float]] = []
        for task in range(len(vectors)):
            magnitudes = (vectors.of(task, name).abs() for name in group)
            low, high = flat.select(magnitudes, [margin, size - 1 - margin])  # L34, L13-25
            self.bounds.append((low, high))
            scores = (self._score(vectors.of(task, name), task, name) for name in group)
            self.cuts.append(kept_cut(flat, scores, keep))

    def _sum(self, name: str) -> Tensor:
        total = self.vectors.of(0, name)
        for task in range(1, len(self.vectors)):
            total.add_(self.vectors.of(task, name))
        return total

    def _score(self, tau: Tensor, task: int, name: str) -> Tensor:
        """β_i = intra ⊙ inter of one tensor (L34-40)."""
        low, high = self.bounds[task]
        spread = high - low
        magnitude = tau.abs().clamp_(low, high)
        relative = magnitude.sub_(low).div_(spread) if spread > 0 else magnitude.zero_()
        intra = relative.square_().mul_(len(self.vectors)).exp_()  # L36-37
        inter = tau.mul(self.total[name]).tanh_()  # L38-39: raw τ times Σ_j raw τ_j
        return intra.mul_(inter)

    def weights(self, task: int, name: str) -> tuple[Tensor, Tensor]:
        tau = self.vectors.of(task, name)
        low, high = self.bounds[task]
        clipped = tau.abs().clamp_(low, high).mul_(tau.sign())  # τ̃, L35
        return clipped, _normalised_kept(self._score(tau, task, name), *self.cuts[task])

    def release(self, name: str) -> None:
        del self.total[name]


def _normalised_kept(scores: Tensor, dropped: float, top: float) -> Tensor:
    """L42's clamp at the cut then min-max: (β − cut)/(max − cut), so the kept entries land
    in (0, 1] and the dropped ones on 0; all 1 when nothing is dropped (the limit of a cut
    at −inf)."""
    if dropped == -math.inf:
        return torch.ones_like(scores)
    if top <= dropped:  # every kept score ties with the cut: nothing stands out
        return torch.zeros_like(scores)
    return scores.sub_(dropped).clamp_(min=0).div_(top - dropped)


class PaperPlan:
    """The paper's form over one group: per pair of tasks the min-max bounds and the
    log-sum-exp of Norm(τ_i ⊙ τ_j), then per task its score cut. Costs O(N²) products per
    entry and keeps the current tensor's N task vectors."""

    floor = torch.finfo(torch.float32).tiny  # the paper divides outright; this only turns
    # 0/0 (every task dropped the entry) into 0

    def __init__(self, vectors: TaskVectors, group: Sequence[str], ratio: float, clip: float):
        self.vectors = vectors
        self._cached: tuple[str, list[Tensor]] | None = None
        tasks = len(vectors)
        self.pairs = [(i, j) for i in range(tasks) for j in range(i, tasks)]
        size = group_size(vectors.base, group)
        self.bounds = self._pair_bounds(group)
        self.log_inter, self.log_intra = self._log_denominators(group, math.log(size))
        flat = FlatOrder(size, group_dtype(vectors.base, group))
        keep = kept_count(ratio, size)
        self.cuts = [kept_cut(flat, (self._score(task, name) for name in group), keep)[0]
                     for task in range(tasks)]

    def _taus(self, name: str) -> list[Tensor]:
        if self._cached is None or self._cached[0] != name:
            self._cached = (name, [self.vectors.of(t, name) for t in range(len(self.vectors))])
        return self._cached[1]

    def _product(self, name: str, i: int, j: int) -> Tensor:
        taus = self._taus(name)
        return taus[min(i, j)] * taus[max(i, j)]

    def _pair_bounds(self, group: Sequence[str]) -> dict[tuple[int, int], tuple[float, float]]:
        bounds = {pair: (math.inf, -math.inf) for pair in self.pairs}
        for name in group:
            for pair in self.pairs:
                low, high = torch.aminmax(self._product(name, *pair))
                bounds[pair] = (min(bounds[pair][0], low.item()),
                                max(bounds[pair][1], high.item()))
        return bounds

    def _norm(self, name: str, i: int, j: int) -> Tensor:
        low, high = self.bounds[(min(i, j), max(i, j))]
        product = self._product(name, i, j)
        return product.sub_(low).div_(high - low) if high > low else product.zero_()

    def _log_denominators(self, group, log_size) -> tuple[dict, list[float]]:
        """log(Σ exp(·)/D) over the group: of Norm(τ_i ⊙ τ_j) per pair, of N·Norm(τ_i ⊙ τ_i)
        per task."""
        tasks = len(self.vectors)
        inter_parts = {pair: [] for pair in self.pairs}
        intra_parts = [[] for _ in range(tasks)]
        for name in group:
            for i, j in self.pairs:
                norm = self._norm(name, i, j).reshape(-1)
                inter_parts[(i, j)].append(torch.logsumexp(norm, 0))
                if i == j:
                    intra_parts[i].append(torch.logsumexp(tasks * norm, 0))

        def log_mean(parts: list[Tensor]) -> float:
            return torch.logsumexp(torch.stack(parts), 0).item() - log_size
        return ({pair: log_mean(parts) for pair, parts in inter_parts.items()},
                [log_mean(parts) for parts in intra_parts])

    def _score(self, task: int, name: str) -> Tensor:
        """D²·β_i: D·Softmax(N·Norm(τ_i ⊙ τ_i)) ⊙ Σ_j D·Softmax(Norm(τ_i ⊙ τ_j))."""
        tasks = len(self.vectors)
        intra = torch.exp(tasks * self._norm(name, task, task) - self.log_intra[task])
        inter = torch.zeros_like(intra)
        for other in range(tasks):
            pair = (min(task, other), max(task, other))
            inter.add_(torch.exp(self._norm(name, task, other) - self.log_inter[pair]))
        return intra.mul_(inter)

    def weights(self, task: int, name: str) -> tuple[Tensor, Tensor]:
        scores = self._score(task, name)
        return self._taus(name)[task], scores.masked_fill_(scores <= self.cuts[task], 0)

    def release(self, name: str) -> None:
        self._cached = None


PLANS = {"official": OfficialPlan, "paper": PaperPlan}
