"""Calibration metrics against hand-computed values and an independent implementation."""
import math

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from mixbench.eval import calibration_metrics, fit_temperature, reliability_bins
from mixbench.eval.calibration import bin_index


def two_class_logits(confidences, correct):
    """Logits whose softmax gives exactly ``conf`` to class 0; label 0 when correct."""
    logits = []
    for c in confidences:
        logits.append([0.0, -math.inf] if c == 1.0 else [math.log(c), math.log(1 - c)])
    labels = [0 if ok else 1 for ok in correct]
    return torch.tensor(logits, dtype=torch.float64), torch.tensor(labels)


def test_ece_mce_hand_computed_including_confidence_one():
    # 15 bins of width 1/15. conf 1.0 → last bin (gap 0); 0.9, 0.9 → bin 13 (acc 0.5, gap 0.4);
    # 0.62 → bin 9 (correct, gap 0.38); 0.55 → bin 8 (wrong, gap 0.55).
    logits, labels = two_class_logits([1.0, 0.9, 0.9, 0.62, 0.55],
                                      [True, True, False, True, False])
    assert torch.softmax(logits, 1)[0, 0].item() == 1.0
    m = calibration_metrics(logits, labels)
    assert m["ece"] == pytest.approx((0 + 2 * 0.4 + 0.38 + 0.55) / 5)
    assert m["mce"] == pytest.approx(0.55)
    assert m["top1"] == pytest.approx(3 / 5)


def test_confidence_one_falls_in_last_bin_and_zero_in_first():
    conf = torch.tensor([0.0, 1e-9, 1 / 15 + 1e-9, 0.5, 1.0], dtype=torch.float64)
    assert bin_index(conf, 15).tolist() == [0, 0, 1, 7, 14]
    logits, labels = two_class_logits([1.0, 1.0], [True, False])
    rel = reliability_bins(logits, labels)
    assert rel["count"][14] == 2 and sum(rel["count"]) == 2
    assert rel["acc"][14] == 0.5 and rel["conf"][14] == 1.0


def test_ece_and_mce_agree_with_torchmetrics():
    torch.manual_seed(1)
    logits = torch.randn(2000, 10) * 3
    labels = torch.randint(0, 10, (2000,))
    m = calibration_metrics(logits, labels)
    probs = torch.softmax(logits.double(), 1)
    ref_ece = multiclass_calibration_error(probs, labels, 10, n_bins=15, norm="l1")
    ref_mce = multiclass_calibration_error(probs, labels, 10, n_bins=15, norm="max")
    assert m["ece"] == pytest.approx(ref_ece.item(), abs=1e-6)
    assert m["mce"] == pytest.approx(ref_mce.item(), abs=1e-6)


def test_adaptive_and_classwise_ece_match_plain_loops():
    torch.manual_seed(2)
    n, k, bins = 300, 4, 15
    logits = torch.randn(n, k, dtype=torch.float64) * 2
    labels = torch.randint(0, k, (n,))
    probs = torch.softmax(logits, 1)
    m = calibration_metrics(logits, labels, bins)
    # aECE: sort by confidence, 15 equal-count chunks (sizes 20 each here).
    conf, pred = probs.max(1)
    order = sorted(range(n), key=lambda i: conf[i].item())
    aece = 0.0
    for b in range(bins):
        chunk = order[b * 20:(b + 1) * 20]
        acc = sum(pred[i].item() == labels[i].item() for i in chunk) / len(chunk)
        avg = sum(conf[i].item() for i in chunk) / len(chunk)
        aece += len(chunk) / n * abs(acc - avg)
    assert m["aece"] == pytest.approx(aece)
    # classwise ECE: per class, equal-width bins over p_k against [label == k].
    total = 0.0
    for c in range(k):
        for b in range(bins):
            members = [i for i in range(n) if max(math.ceil(probs[i, c].item() * bins) - 1, 0) == b]
            if members:
                freq = sum(labels[i].item() == c for i in members) / len(members)
                avg = sum(probs[i, c].item() for i in members) / len(members)
                total += len(members) / n * abs(freq - avg)
    assert m["cwece"] == pytest.approx(total / k)


def test_nll_brier_top5():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([1, 1])
    m = calibration_metrics(logits, labels)
    probs = torch.softmax(logits.double(), 1)
    expected_brier = ((probs - torch.eye(3, dtype=torch.float64)[labels]) ** 2).sum(1).mean()
    assert m["brier"] == pytest.approx(expected_brier.item())
    assert m["nll"] == pytest.approx(-torch.log(probs[[0, 1], [1, 1]]).mean().item())
    assert m["top1"] == 0.5 and m["top5"] == 1.0  # K=3 < 5: top-5 covers every class


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="logits"):
        calibration_metrics(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_temperature_scaling_fixes_overconfidence():
    torch.manual_seed(3)
    labels = torch.randint(0, 5, (1000,))
    logits = torch.randn(1000, 5)
    logits[torch.arange(1000), labels] += 1.5   # informative but noisy...
    overconfident = logits * 4                  # ...then made far too sharp
    before = calibration_metrics(overconfident, labels)
    t = fit_temperature(overconfident, labels)
    after = calibration_metrics(overconfident / t, labels)
    assert t > 2.0
    assert after["nll"] < before["nll"] - 0.1
    assert after["ece"] < before["ece"]
    assert after["top1"] == before["top1"]  # TS never changes the prediction
