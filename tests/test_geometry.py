"""Neural-collapse geometry: exact values on a constructed simplex ETF, and the analyze tool."""
import json
import math

import pytest
import torch

from conftest import run_tool
from mixbench.app.train import train
from mixbench.eval.geometry import collapse_metrics, etf_distance, mixed_alignment, nc1
from mixbench.components import BACKBONES

K, D = 4, 7


def simplex_etf(k=K, d=D, seed=0):
    """K unit vectors in R^D with pairwise cosine −1/(K−1), randomly rotated."""
    etf = (torch.eye(k) - 1.0 / k) * math.sqrt(k / (k - 1))
    padded = torch.zeros(k, d, dtype=torch.float64)
    padded[:, :k] = etf
    rotation, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64,
                                              generator=torch.Generator().manual_seed(seed)))
    return padded @ rotation


def collapsed(offset=3.0, per_class=5):
    means = simplex_etf()
    labels = torch.arange(K).repeat_interleave(per_class)
    return means[labels] + offset, labels, means  # features sit on their class means


def test_etf_values_on_a_constructed_etf():
    features, labels, means = collapsed()
    m = collapse_metrics(features, labels, weight=2.5 * means)  # scale does not matter
    assert m["nc1"] == pytest.approx(0.0, abs=1e-10)
    assert m["means_etf_distance"] == pytest.approx(0.0, abs=1e-10)
    assert m["classifier_etf_distance"] == pytest.approx(0.0, abs=1e-10)
    assert m["classifier_means_distance"] == pytest.approx(0.0, abs=1e-10)
    assert m["means_norm_cv"] == pytest.approx(0.0, abs=1e-10)
    cos = torch.nn.functional.cosine_similarity(means[0], means[1], dim=0).item()
    assert cos == pytest.approx(-1 / (K - 1))


def test_departures_from_collapse_are_measured():
    features, labels, means = collapsed()
    noisy = features + 0.3 * torch.randn(features.shape, dtype=torch.float64)
    assert nc1(noisy, labels, K) > 0.01
    assert etf_distance(torch.randn(K, D)) > 0.1
    squeezed = means.clone()
    squeezed[0] *= 0.5  # unequal norms: no longer an ETF
    assert etf_distance(squeezed) > 0.05
    m = collapse_metrics(features, labels, weight=torch.randn(K, D, dtype=torch.float64))
    assert m["classifier_etf_distance"] > 0.05 and m["classifier_means_distance"] > 0.1


def test_mixed_alignment_on_an_etf():
    means = simplex_etf()
    a = torch.tensor([0, 1, 2, 0])
    b = torch.tensor([0, 1, 3, 2])  # two same-class pairs, two different-class pairs
    lam = 0.5
    mixed = lam * means[a] + (1 - lam) * means[b] + 3.0  # features of the mixed inputs
    out = mixed_alignment(mixed, a, b, lam, weight=means, global_mean=torch.full((D,), 3.0))
    assert out["mixed_same_class_cos"] == pytest.approx(1.0)
    assert out["mixed_diff_class_cos"] == pytest.approx(1.0)
    # the midpoint of two ETF vertices lies along their decision boundary
    assert out["mixed_diff_boundary_angle_deg"] == pytest.approx(0.0, abs=1e-5)
    assert out["mixed_same_class_pairs"] == 2 == out["mixed_diff_class_pairs"]
    # a feature at class a's mean is far from the a-vs-b boundary
    off = mixed_alignment(means[a] + 3.0, a, b, lam, means, torch.full((D,), 3.0))
    assert off["mixed_diff_boundary_angle_deg"] > 30


def test_backbone_features_feed_the_head():
    model = BACKBONES.build({"name": "small_cnn", "width": 4}, num_classes=3, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    assert model.forward_features(x).shape == (2, 16)
    assert torch.allclose(model.head(model.forward_features(x)), model(x))


@pytest.mark.slow
def test_analyze_tool_writes_json_and_figure(cfg_factory, tmp_path):
    train(cfg_factory("+method=mixup", "backbone.width=8"), tmp_path)
    result = run_tool("tools/analyze.py", str(tmp_path), "--geometry", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "geometry.json").read_text())
    for key in ("nc1", "means_etf_distance", "classifier_etf_distance",
                "classifier_means_distance", "mixed_same_class_cos", "mixed_diff_class_cos",
                "mixed_diff_boundary_angle_deg"):
        assert isinstance(saved[key], float), key
    assert saved["method"] == "mixup" and saved["samples"] == 1257
    assert (tmp_path / "geometry.png").stat().st_size > 10_000
    missing = run_tool("tools/analyze.py", str(tmp_path / "nope"), "--geometry")
    assert missing.returncode == 2 and "no checkpoint" in missing.stderr
