"""Deep metric learning losses (``task = "retrieval"``): contrastive, multi-similarity and
ProxyAnchor. The plain loss of a batch (``loss(embeddings, labels)``) is
pytorch-metric-learning's; ``loss.mixed(embeddings, labels, pairs)`` is the Metrix form
(Venkataramanan et al., ICLR 2022), which PML does not have.

Metrix treats a pair (anchor a, example u) as the unit. A mixed example
u = λ·x_i + (1−λ)·x_j has the interpolated positive-ness v = λ·[y_a = y_i] + (1−λ)·[y_a = y_j]
with respect to anchor a, and enters the loss as a positive with weight v and as a negative
with weight 1 − v:

    ℓ̃(a) = τ( σ⁺(Σ_u v·ρ⁺(s(a,u))) + σ⁻(Σ_u (1−v)·ρ⁻(s(a,u))) )

so with v ∈ {0, 1} each form is exactly the plain loss on those pairs (tests check it against
PML). For ProxyAnchor the anchors are the class proxies and v is taken for every class."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import LpDistance
from torch import nn

from mixbench.errors import ConfigError
from mixbench.registry import LOSSES

TASK_HINT = "retrieval losses train with protocol=retrieval"


@dataclass
class MixedPairs:
    """Mixed examples u_k = lam·x[i_k] + (1−lam)·x[j_k] of a batch, each paired with the anchor
    ``anchors[k]`` (an index into the clean batch). ``first``/``second`` are the classes of
    x[i_k] and x[j_k]; ``lam`` is a float or an M-vector."""

    embeddings: torch.Tensor  # M × d
    anchors: torch.Tensor  # M
    first: torch.Tensor  # M
    second: torch.Tensor  # M
    lam: float | torch.Tensor

    def __post_init__(self):
        m = len(self.embeddings)
        if not len(self.anchors) == len(self.first) == len(self.second) == m:
            raise ValueError(f"mixed pairs need M anchors and classes for M={m} embeddings; got "
                             f"{len(self.anchors)}, {len(self.first)}, {len(self.second)}")

    def __len__(self) -> int:
        return len(self.embeddings)

    def _lam(self) -> torch.Tensor:
        return torch.as_tensor(self.lam, dtype=self.embeddings.dtype,
                               device=self.embeddings.device)

    def positiveness(self, anchor_classes: torch.Tensor) -> torch.Tensor:
        """v of each mixed example with respect to its anchor, of class ``anchor_classes``."""
        lam = self._lam()
        return (lam * (anchor_classes == self.first).to(lam.dtype)
                + (1 - lam) * (anchor_classes == self.second).to(lam.dtype))

    def positiveness_per_class(self, num_classes: int) -> torch.Tensor:
        """M × C: v of each mixed example for each class's proxy."""
        lam = self._lam()
        lam = lam[:, None] if lam.dim() else lam
        first = F.one_hot(self.first.long(), num_classes).to(self.embeddings.dtype)
        second = F.one_hot(self.second.long(), num_classes).to(self.embeddings.dtype)
        return lam * first + (1 - lam) * second


def _avg_nonzero(losses: torch.Tensor) -> torch.Tensor:
    """PML's AvgNonZeroReducer: the mean of the positive entries (0 when there are none)."""
    count = (losses > 0).sum()
    return losses.sum() / count.clamp(min=1)


def _log1p_weighted_sum_exp(x: torch.Tensor, w: torch.Tensor, dim: int) -> torch.Tensor:
    """log(1 + Σ w·exp(x)) along ``dim``, stable; entries with w = 0 drop out."""
    logw = torch.where(w > 0, w.clamp(min=1e-30).log(), torch.full_like(w, float("-inf")))
    z = x + logw
    zeros = torch.zeros_like(z.narrow(dim, 0, 1))
    return torch.logsumexp(torch.cat([zeros, z], dim=dim), dim=dim)


class PairLoss(nn.Module):
    """A retrieval loss: plain on a batch via PML, Metrix form on mixed pairs."""

    task = "retrieval"
    task_hint = TASK_HINT
    lr_multiplier = 1.0  # the loss's own parameters (proxies) learn at lr × this

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point() or labels.dim() != 1:
            raise ValueError(f"a retrieval loss takes class indices (N), got "
                             f"{tuple(labels.shape)} {labels.dtype}")
        return self.plain(embeddings.float(), labels)

    def plain(self, embeddings, labels):
        raise NotImplementedError

    def mixed(self, embeddings: torch.Tensor, labels: torch.Tensor,
              pairs: MixedPairs) -> torch.Tensor:
        raise NotImplementedError


class Contrastive(PairLoss):
    """Contrastive loss on the Euclidean distance of L2-normalised embeddings: positives pulled
    below ``pos_margin``, negatives pushed beyond ``neg_margin``; positive and negative terms
    each averaged over their non-zero entries (PML's AvgNonZeroReducer, as Metrix's main.py
    L150-161 sets it up)."""

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 0.5):
        super().__init__()
        if not neg_margin > pos_margin >= 0:
            raise ConfigError(f"loss.neg_margin must exceed loss.pos_margin >= 0, got "
                              f"pos_margin={pos_margin}, neg_margin={neg_margin}")
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)
        self.pml = pml_losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin,
                                              distance=LpDistance())

    def plain(self, embeddings, labels):
        return self.pml(embeddings, labels)

    def mixed(self, embeddings, labels, pairs):
        anchors = F.normalize(embeddings[pairs.anchors].float(), dim=1)
        mixed = F.normalize(pairs.embeddings.float(), dim=1)
        d = (anchors - mixed).pow(2).sum(1).clamp_min(1e-12).sqrt()
        v = pairs.positiveness(labels[pairs.anchors])
        # mixup/losses.py L37-68: λ·relu(d − 0) and (1 − λ)·relu(0.5 − d)
        pos = v * F.relu(d - self.pos_margin)
        neg = (1 - v) * F.relu(self.neg_margin - d)
        return _avg_nonzero(pos) + _avg_nonzero(neg)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}"


class MultiSimilarity(PairLoss):
    """Multi-similarity loss (Wang et al., 2019) on cosine similarity, per anchor
    (1/α)·log(1 + Σ_p e^{−α(s−base)}) + (1/β)·log(1 + Σ_n e^{β(s−base)}), averaged over
    anchors; pairs mined by PML's MultiSimilarityMiner with ``miner_epsilon`` (null: every
    pair)."""

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                 miner_epsilon: float | None = 0.1):
        super().__init__()
        if not (alpha > 0 and beta > 0):
            raise ConfigError(f"loss.alpha and loss.beta must be > 0, got {alpha}, {beta}")
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)
        self.pml = pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
        self.miner = (pml_miners.MultiSimilarityMiner(epsilon=miner_epsilon)
                      if miner_epsilon is not None else None)

    def plain(self, embeddings, labels):
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.pml(embeddings, labels, pairs)

    def mixed(self, embeddings, labels, pairs):
        s = F.cosine_similarity(embeddings[pairs.anchors].float(), pairs.embeddings.float(),
                                dim=1)
        v = pairs.positiveness(labels[pairs.anchors])
        # one row per anchor that has mixed pairs, one column per pair
        anchors, column = torch.unique(pairs.anchors, return_inverse=True)
        mine = column[None, :] == torch.arange(len(anchors), device=s.device)[:, None]
        s_ = s[None, :].expand(len(anchors), -1)
        pos = _log1p_weighted_sum_exp(-self.alpha * (s_ - self.base), v * mine, 1) / self.alpha
        neg = _log1p_weighted_sum_exp(self.beta * (s_ - self.base), (1 - v) * mine, 1) / self.beta
        return (pos + neg).mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}"


class ProxyAnchor(PairLoss):
    """ProxyAnchor (Kim et al., 2020): one learned proxy per training class as the anchor,
    cosine similarity, margin δ and scale α; the proxies learn at lr × ``proxy_lr``
    (Proxy-Anchor's recipe, which Metrix's commands follow). ``num_classes`` and
    ``embedding_dim`` come from the run (protocol=retrieval)."""

    def __init__(self, margin: float = 0.1, alpha: float = 32.0, proxy_lr: float = 100.0,
                 num_classes: int | None = None, embedding_dim: int | None = None):
        super().__init__()
        if not (alpha > 0 and margin >= 0 and proxy_lr > 0):
            raise ConfigError(f"loss.alpha and loss.proxy_lr must be > 0 and loss.margin >= 0, "
                              f"got alpha={alpha}, margin={margin}, proxy_lr={proxy_lr}")
        self.margin, self.alpha, self.lr_multiplier = float(margin), float(alpha), float(proxy_lr)
        self.num_classes = num_classes
        self.pml = None
        if num_classes is not None and embedding_dim is not None:
            self.pml = pml_losses.ProxyAnchorLoss(num_classes, embedding_dim, margin=margin,
                                                  alpha=alpha)

    def _require(self):
        if self.pml is None:
            raise ConfigError("loss=proxy_anchor learns a proxy per training class: it needs "
                              "the class count and embedding size that protocol=retrieval "
                              "gives it")
        return self.pml

    def plain(self, embeddings, labels):
        return self._require()(embeddings, labels)

    def mixed(self, embeddings, labels, pairs):
        proxies = self._require().proxies
        s = F.normalize(pairs.embeddings.float(), dim=1) @ F.normalize(proxies, dim=1).T
        v = pairs.positiveness_per_class(self.num_classes)  # M × C
        pos = _log1p_weighted_sum_exp(-self.alpha * (s - self.margin), v, 0)  # per class
        neg = _log1p_weighted_sum_exp(self.alpha * (s + self.margin), 1 - v, 0)
        with_pos = (v > 0).any(0)
        return pos[with_pos].sum() / with_pos.sum().clamp(min=1) + neg.sum() / self.num_classes

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, margin={self.margin}, alpha={self.alpha}"


@LOSSES.register("contrastive")
def contrastive(*, pos_margin: float = 0.0, neg_margin: float = 0.5, num_classes=None,
                embedding_dim=None) -> Contrastive:
    return Contrastive(pos_margin, neg_margin)


@LOSSES.register("multi_similarity")
def multi_similarity(*, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                     miner_epsilon: float | None = 0.1, num_classes=None,
                     embedding_dim=None) -> MultiSimilarity:
    return MultiSimilarity(alpha, beta, base, miner_epsilon)


@LOSSES.register("proxy_anchor")
def proxy_anchor(*, margin: float = 0.1, alpha: float = 32.0, proxy_lr: float = 100.0,
                 num_classes: int | None = None,
                 embedding_dim: int | None = None) -> ProxyAnchor:
    return ProxyAnchor(margin, alpha, proxy_lr, num_classes, embedding_dim)
