"""Accuracy and calibration metrics from logits; all fractions, computed in float64.

Binning follows the calibration literature: 15 equal-width bins over the top-label confidence,
right-closed ``(lo, hi]``, so a confidence of exactly 1.0 falls in the last bin (and 0.0 in the
first)."""
from __future__ import annotations

import torch


def bin_index(conf: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Equal-width, right-closed bins: (0, 1/n] → 0, ..., ((n-1)/n, 1] → n-1."""
    return (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)


def _binned_gaps(conf: torch.Tensor, hit: torch.Tensor, index: torch.Tensor, n_bins: int):
    """Per-bin count, mean confidence and accuracy (empty bins: zeros)."""
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, conf)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, hit)
    safe = count.clamp(min=1)
    return count, conf_sum / safe, hit_sum / safe


def expected_calibration_error(conf: torch.Tensor, hit: torch.Tensor, n_bins: int = 15):
    """(ECE, MCE) over equal-width bins: Σ_b |B_b|/N·|acc_b − conf_b| and max_b |acc_b − conf_b|."""
    count, mean_conf, acc = _binned_gaps(conf, hit, bin_index(conf, n_bins), n_bins)
    gap = (acc - mean_conf).abs()
    ece = (count / count.sum() * gap).sum().item()
    mce = gap[count > 0].max().item()
    return ece, mce


def adaptive_calibration_error(conf: torch.Tensor, hit: torch.Tensor, n_bins: int = 15) -> float:
    """ECE over equal-mass bins (each holds ~N/n_bins samples sorted by confidence)."""
    order = conf.argsort()
    n_bins = min(n_bins, len(conf))
    total = 0.0
    for chunk in torch.tensor_split(order, n_bins):
        total += len(chunk) * (hit[chunk].mean() - conf[chunk].mean()).abs().item()
    return total / len(conf)


def classwise_calibration_error(probs: torch.Tensor, labels: torch.Tensor,
                                n_bins: int = 15) -> float:
    """Mean over classes k of the ECE of p_k against the indicator [label == k]."""
    n, k = probs.shape
    is_class = torch.nn.functional.one_hot(labels, k).to(torch.float64)
    index = (bin_index(probs, n_bins) + torch.arange(k) * n_bins).flatten()  # class-major bins
    count, mean_conf, freq = _binned_gaps(probs.flatten(), is_class.flatten(), index, n_bins * k)
    return ((count / n) * (freq - mean_conf).abs()).sum().item() / k


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """top1, top5, nll, brier, ece, aece, mce, cwece for N×K logits and N integer labels.

    Brier is the multi-class form Σ_k (p_k − y_k)², averaged over samples (range [0, 2])."""
    if logits.dim() != 2 or labels.dim() != 1 or len(logits) != len(labels):
        raise ValueError(f"expected logits N×K and labels N, got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("cannot compute metrics on an empty set")
    logits = logits.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.long)
    probs = torch.softmax(logits, dim=1)
    conf, pred = probs.max(dim=1)
    hit = (pred == labels).to(torch.float64)
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    ece, mce = expected_calibration_error(conf, hit, n_bins)
    one_hot = torch.nn.functional.one_hot(labels, logits.shape[1]).to(torch.float64)
    return {
        "top1": hit.mean().item(),
        "top5": (top5 == labels[:, None]).any(dim=1).to(torch.float64).mean().item(),
        "nll": torch.nn.functional.cross_entropy(logits, labels).item(),
        "brier": ((probs - one_hot) ** 2).sum(dim=1).mean().item(),
        "ece": ece,
        "aece": adaptive_calibration_error(conf, hit, n_bins),
        "mce": mce,
        "cwece": classwise_calibration_error(probs, labels, n_bins),
    }


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Per-bin accuracy, mean confidence and count, for reliability diagrams and results.json."""
    probs = torch.softmax(logits.detach().to("cpu", torch.float64), dim=1)
    conf, pred = probs.max(dim=1)
    hit = (pred == labels.cpu()).to(torch.float64)
    count, mean_conf, acc = _binned_gaps(conf, hit, bin_index(conf, n_bins), n_bins)
    return {"bins": torch.linspace(0, 1, n_bins + 1).tolist(), "acc": acc.tolist(),
            "conf": mean_conf.tolist(), "count": count.long().tolist()}
