"""RankMixup's ranking losses (Noh et al., ICCV 2023), as in the authors' code.

Both compare the raw batch's predictions with those of mixed copies of it: a mixed sample
should be less confident than the raw ones, and more mixed ones less confident still."""
from __future__ import annotations

import torch


def mixup_ranking_loss(raw_logits: torch.Tensor, mixed_logits: torch.Tensor, margin: float,
                       keep: torch.Tensor | None = None) -> torch.Tensor:
    """MRL: mean over the batch of relu(max_k z̃_k − max_k z_k + margin) on logits (the authors
    use logits; their probability variant is commented out). ``keep`` (bool B) masks out rows
    whose pair shares a class; masked rows count as zero in the mean, as in the authors' code."""
    gap = torch.relu(mixed_logits.float().max(dim=1).values - raw_logits.float().max(dim=1).values
                     + margin)
    if keep is not None:
        gap = gap * keep.to(gap.dtype)
    return gap.mean()


def mixup_ndcg_loss(raw_logits: torch.Tensor, mixed_logits: torch.Tensor,
                    relevance: torch.Tensor) -> torch.Tensor:
    """M-NDCG: 1 − NDCG per raw sample and its M mixed copies, averaged over the batch.

    ``mixed_logits`` is M×B×K, ``relevance`` M×B (max(λ, 1−λ) of each copy); the raw sample
    has relevance 1. Items are placed in the order of their relevance (raw first); the gains
    are the confidences for DCG and the relevances for the ideal DCG, so the loss is
    differentiable and vanishes when each confidence equals its relevance. The ratio is taken
    whichever way is ≤ 1, so over- and under-confidence are both penalised (authors' code)."""
    raw_conf = torch.softmax(raw_logits.float(), dim=-1).max(dim=-1).values  # B
    mixed_conf = torch.softmax(mixed_logits.float(), dim=-1).max(dim=-1).values.t()  # B×M
    relevance = relevance.float().t()  # B×M
    order = relevance.argsort(dim=1, descending=True)
    conf = torch.cat([raw_conf[:, None], mixed_conf.gather(1, order)], dim=1)
    rel = torch.cat([torch.ones_like(raw_conf)[:, None], relevance.gather(1, order)], dim=1)
    discount = torch.log2(torch.arange(2, conf.shape[1] + 2, device=conf.device, dtype=conf.dtype))
    dcg, idcg = (conf / discount).sum(dim=1), (rel / discount).sum(dim=1)
    ndcg = torch.minimum(dcg / idcg, idcg / dcg)
    return (1.0 - ndcg).mean()
