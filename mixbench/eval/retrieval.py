"""Retrieval metrics on embeddings: Recall@K, MAP@R, NMI, and Metrix's utilisation.

The nearest-neighbour search runs over chunks of queries, so memory stays bounded (one chunk ×
N block of distances at a time, never N × N). Neighbours are ranked by squared Euclidean
distance (on L2-normalised embeddings the same order as cosine similarity); equal distances
are ranked by the reference's index, so ties give one answer whatever the chunk size. Each
query's own row is excluded when the queries are the references.

- Recall@K: the share of queries with a same-class item among their K nearest neighbours
  (pytorch-metric-learning's ``AccuracyCalculator`` has K = 1 only, as precision_at_1).
- MAP@R (Musgrave et al., 2020): for a query whose class has R other items, the mean over the
  first R ranks of precision@i at each rank i that holds a same-class item, divided by R.
- NMI: k-means (as many clusters as classes, the best of NMI_STARTS k-means++ starts) against
  the labels.
- Utilisation (Venkataramanan et al., 2022): the mean over queries of the squared distance to
  the nearest reference (training) embedding; lower means the test embeddings land where
  training put embeddings."""
from __future__ import annotations

import torch
from sklearn.metrics import normalized_mutual_info_score

# Distances of one chunk (chunk × N float32) plus the int64 sort keys: the chunk holds about
# this many bytes.
CHUNK_BYTES = 128 * 2**20


def _chunk_rows(n_reference: int, chunk_bytes: int) -> int:
    return max(1, chunk_bytes // (max(n_reference, 1) * 32))


def squared_distances(query: torch.Tensor, reference: torch.Tensor,
                      ref_sq: torch.Tensor | None = None) -> torch.Tensor:
    """‖q − r‖² for every pair, in float32, never negative (and never −0)."""
    query, reference = query.float(), reference.float()
    ref_sq = reference.pow(2).sum(1) if ref_sq is None else ref_sq
    d = query.pow(2).sum(1, keepdim=True) + ref_sq - 2.0 * query @ reference.T
    return d.clamp_min_(0.0).add_(0.0)


def _sort_keys(d: torch.Tensor) -> torch.Tensor:
    """One int64 per distance that orders like (distance, column): a non-negative float32's
    bits order like its value, and the column breaks ties. topk on these is an exact, stable
    ranking."""
    bits = d.contiguous().view(torch.int32).to(torch.int64)
    return (bits << 32) | torch.arange(d.shape[1], device=d.device, dtype=torch.int64)


def _neighbor_chunks(query: torch.Tensor, reference: torch.Tensor, k: int, exclude_self: bool,
                     chunk_bytes: int):
    """(first row, squared distances, indices) of the ``k`` nearest references of each chunk
    of queries, nearest first, ties by index."""
    if exclude_self and len(query) != len(reference):
        raise ValueError(f"exclude_self needs the queries to be the references; got "
                         f"{len(query)} queries and {len(reference)} references")
    available = len(reference) - (1 if exclude_self else 0)
    if not 1 <= k <= available:
        raise ValueError(f"k must be in 1..{available} (the references a query can retrieve), "
                         f"got {k}")
    ref_sq = reference.float().pow(2).sum(1)
    rows = _chunk_rows(len(reference), chunk_bytes)
    for start in range(0, len(query), rows):
        d = squared_distances(query[start:start + rows], reference, ref_sq)
        if exclude_self:
            own = torch.arange(start, start + len(d), device=d.device)
            d[torch.arange(len(d), device=d.device), own] = float("inf")
        if k == 1:  # argmin returns the first of equal minima: the same ranking, cheaper
            index = d.argmin(1, keepdim=True)
        else:
            keys = torch.topk(_sort_keys(d), k, dim=1, largest=False, sorted=True).values
            index = keys & 0xFFFFFFFF
        yield start, d.gather(1, index), index


def nearest_neighbors(query: torch.Tensor, reference: torch.Tensor, k: int, *,
                      exclude_self: bool = False, chunk_bytes: int = CHUNK_BYTES
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared distances, indices) of the ``k`` nearest references of each query, nearest
    first, ties by index. ``exclude_self``: query i is reference i (the same set) and is not
    its own neighbour."""
    chunks = list(_neighbor_chunks(query, reference, k, exclude_self, chunk_bytes))
    return torch.cat([d for _, d, _ in chunks]), torch.cat([i for _, _, i in chunks])


def recall_and_map_at_r(embeddings: torch.Tensor, labels: torch.Tensor, ks, *,
                        chunk_bytes: int = CHUNK_BYTES) -> dict[str, float]:
    """Recall@K for each K of ``ks`` and MAP@R, every embedding a query against all the others
    (a K above the number of other items counts as all of them). Per chunk of queries: only
    a chunk's neighbours are held at a time."""
    labels = labels.to(embeddings.device).long()
    n = len(labels)
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 embeddings, got {n}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    class_size = torch.bincount(labels)
    depth = min(n - 1, max(ks[-1], int(class_size.max()) - 1))
    ranks = torch.arange(1, depth + 1, device=embeddings.device)
    hits = torch.zeros(len(ks), dtype=torch.float64, device=embeddings.device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=embeddings.device)
    scored = 0
    for start, _, index in _neighbor_chunks(embeddings, embeddings, depth, True, chunk_bytes):
        own = labels[start:start + len(index)]
        same = labels[index] == own[:, None]  # chunk × depth, nearest first
        first = torch.where(same.any(1), same.float().argmax(1), depth)
        hits += torch.stack([(first < min(k, depth)).sum() for k in ks]).double()
        # MAP@R: R = the query's class size - 1; queries alone in their class are left out
        r = class_size[own] - 1
        relevant = same & (ranks[None, :] <= r[:, None])
        precision = relevant.cumsum(1).double() / ranks
        ap = (precision * relevant).sum(1) / r.clamp(min=1)
        ap_sum += ap[r > 0].sum()
        scored += int((r > 0).sum())
    out = {f"recall@{k}": (hits[i] / n).item() for i, k in enumerate(ks)}
    out["map@r"] = (ap_sum / scored).item() if scored else float("nan")
    return out


# k-means starts per NMI: the clustering of lowest inertia of this many k-means++ starts
# (sklearn's n_init). One start spreads NMI over k-means seeds by as much as the differences
# between methods; on a Fashion-MNIST test embedding (5,000 × 32, 5 classes) the std over 20
# k-means seeds is 2.9 points with 1 start, 0.7 with 10 and 0.05 with 30
# (docs/metric-learning.md).
NMI_STARTS = 30


@torch.no_grad()
def kmeans(x: torch.Tensor, clusters: int, *, iterations: int = 50, seed: int = 0,
           starts: int = 1, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding, in torch on the embeddings' device,
    assignments in chunks: the cluster of each row. ``starts`` runs from one generator seeded
    with ``seed``, keeping the one of lowest inertia (sum of squared distances to the centers;
    the first on a tie), as sklearn's ``n_init``."""
    if not 1 <= clusters <= len(x):
        raise ValueError(f"k-means needs 1..{len(x)} clusters, got {clusters}")
    if not isinstance(starts, int) or starts < 1:
        raise ValueError(f"k-means needs at least one start, got {starts!r}")
    x = x.float()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    best, best_inertia = None, float("inf")
    for _ in range(starts):
        assign, inertia = _lloyd(x, clusters, iterations, gen, chunk_bytes)
        if inertia < best_inertia:
            best, best_inertia = assign, inertia
    return best


def _lloyd(x: torch.Tensor, clusters: int, iterations: int, gen: torch.Generator,
           chunk_bytes: int) -> tuple[torch.Tensor, float]:
    """One k-means++ seeding (drawn from ``gen``) and Lloyd's iterations: the assignments and
    their inertia against the final centers."""
    centers = x[torch.randint(len(x), (1,), generator=gen).to(x.device)]
    nearest = squared_distances(x, centers).squeeze(1)
    for _ in range(1, clusters):  # k-means++: the next center ∝ squared distance
        weights = nearest.double().cpu()
        pick = torch.multinomial(weights, 1, generator=gen) if weights.sum() > 0 \
            else torch.randint(len(x), (1,), generator=gen)
        centers = torch.cat([centers, x[pick.to(x.device)]])
        nearest = torch.minimum(nearest, squared_distances(x, centers[-1:]).squeeze(1))
    assign = None
    for _ in range(iterations):
        new = nearest_neighbors(x, centers, 1, chunk_bytes=chunk_bytes)[1].squeeze(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        sizes = torch.bincount(assign, minlength=clusters).float()
        filled = sizes > 0  # an empty cluster keeps its center
        centers[filled] = sums[filled] / sizes[filled, None]
    inertia = (x - centers[assign]).pow(2).sum().item()
    return assign, inertia


def nmi(embeddings: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
        starts: int = NMI_STARTS) -> float:
    """Normalised mutual information between k-means clusters (one per class, the best of
    ``starts`` k-means++ starts) and labels."""
    labels = labels.long().cpu()
    clusters = kmeans(embeddings, len(torch.unique(labels)), seed=seed, starts=starts)
    return float(normalized_mutual_info_score(labels.numpy(), clusters.cpu().numpy()))


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, ks=(1, 2, 4, 8), *,
                      chunk_bytes: int = CHUNK_BYTES, nmi_seed: int = 0,
                      nmi_starts: int = NMI_STARTS) -> dict[str, float]:
    """``recall@K`` for each K of ``ks``, ``map@r`` and ``nmi`` of ``embeddings`` (N × d, each
    a query against all the others) with their ``labels``."""
    if embeddings.dim() != 2 or len(embeddings) != len(labels):
        raise ValueError(f"embeddings must be N×d with N labels; got {tuple(embeddings.shape)} "
                         f"and {len(labels)} labels")
    out = recall_and_map_at_r(embeddings, labels, ks, chunk_bytes=chunk_bytes)
    out["nmi"] = nmi(embeddings, labels, seed=nmi_seed, starts=nmi_starts)
    return out


def utilization(query: torch.Tensor, reference: torch.Tensor, *,
                chunk_bytes: int = CHUNK_BYTES) -> float:
    """Mean over ``query`` of the squared distance to its nearest ``reference`` embedding."""
    distances, _ = nearest_neighbors(query, reference, 1, chunk_bytes=chunk_bytes)
    return distances.mean().item()
