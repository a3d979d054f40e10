"""Mixers: valid targets, λ consistent with what was pasted, prob=0, determinism, validation.

The batch uses label == index (K = B), so each mixed target row names its partner: exactly
the own class (weight λ) and the partner's (weight 1-λ)."""
import pytest
import torch

from mixbench.errors import ConfigError
from mixbench.losses import SoftTargetCrossEntropy
from mixbench.registry import METHODS

B, C, H, W = 16, 3, 8, 10
MIXERS = ["mixup", "cutmix"]
MODES = ["batch", "sample"]


def batch():
    # Each image constant and distinct (value i for sample i): pasted pixels are recognisable.
    x = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, C, H, W).clone()
    y = torch.eye(B)
    return x, y


def build(name, **kwargs):
    return METHODS.build({"name": name, **kwargs}, num_classes=B)


def lam_vector(lam):
    return torch.full((B,), lam) if isinstance(lam, float) else lam


def partners(y_mixed):
    """Partner of i: the other non-zero column (i itself when mixed with itself)."""
    off = y_mixed.clone()
    off.fill_diagonal_(0)
    has = off.sum(1) > 0
    return torch.where(has, off.argmax(1), torch.arange(B))


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("mode", MODES)
def test_targets_are_distributions_with_own_weight_lambda(name, mode):
    torch.manual_seed(0)
    x, y = batch()
    result = build(name, alpha=1.0, lam_mode=mode).mix_batch(x, y)
    assert result.x.shape == x.shape and result.x.dtype == x.dtype
    assert result.y.shape == y.shape and result.y.dtype == y.dtype
    assert torch.allclose(result.y.sum(1), torch.ones(B))
    assert ((result.y > 0).sum(1) <= 2).all() and (result.y >= 0).all()
    # own class weighs λ_i, except for a sample paired with itself (then it is all its own)
    self_paired = partners(result.y) == torch.arange(B)
    own_weight = torch.where(self_paired, torch.ones(B), lam_vector(result.lam))
    assert torch.allclose(result.y.diagonal(), own_weight, atol=1e-6)
    assert torch.equal(x, batch()[0]), "inputs must not be modified in place"


@pytest.mark.parametrize("mode", MODES)
def test_mixup_inputs_follow_the_targets(mode):
    torch.manual_seed(1)
    x, y = batch()
    result = build("mixup", alpha=1.0, lam_mode=mode).mix_batch(x, y)
    lam, j = lam_vector(result.lam), partners(result.y)
    expected = lam.view(B, 1, 1, 1) * x + (1 - lam.view(B, 1, 1, 1)) * x[j]
    assert torch.allclose(result.x, expected, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_cutmix_lambda_matches_pasted_area(mode):
    torch.manual_seed(2)
    for _ in range(20):
        x, y = batch()
        result = build("cutmix", alpha=1.0, lam_mode=mode).mix_batch(x, y)
        lam, j = lam_vector(result.lam), partners(result.y)
        own = (result.x == x).all(1).float().mean((1, 2))  # fraction of pixels kept
        mixed_pairs = j != torch.arange(B)
        assert torch.allclose(own[mixed_pairs], lam[mixed_pairs], atol=1e-6)
        # pasted pixels come from the partner, and form one box
        pasted = ~(result.x == x).all(1)
        for i in torch.nonzero(mixed_pairs).flatten().tolist():
            assert (result.x[i][:, pasted[i]] == j[i]).all()
            rows, cols = pasted[i].any(1).sum(), pasted[i].any(0).sum()
            assert pasted[i].sum() == rows * cols


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("mode", MODES)
def test_prob_zero_returns_inputs_unchanged(name, mode):
    x, y = batch()
    result = build(name, prob=0.0, lam_mode=mode).mix_batch(x, y)
    assert torch.equal(result.x, x) and torch.equal(result.y, y)
    assert torch.all(lam_vector(result.lam) == 1.0)


def test_per_sample_prob_mixes_about_that_fraction():
    torch.manual_seed(3)
    x = torch.randn(4000, 1, 2, 2)
    y = torch.eye(10)[torch.randint(0, 10, (4000,))]
    mixer = METHODS.build({"name": "mixup", "prob": 0.3, "lam_mode": "sample"}, num_classes=10)
    lam = mixer.mix_batch(x, y).lam
    assert 0.25 < (lam < 1).float().mean().item() < 0.35


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_mix(name, mode):
    x, y = batch()
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(build(name, lam_mode=mode).mix_batch(x, y))
    assert torch.equal(outs[0].x, outs[1].x) and torch.equal(outs[0].y, outs[1].y)


@pytest.mark.parametrize("bad,match", [({"alpha": 0.0}, "method.alpha"),
                                       ({"alpha": -1.0}, "method.alpha"),
                                       ({"prob": 1.5}, "method.prob"),
                                       ({"prob": -0.1}, "method.prob"),
                                       ({"lam_mode": "pixel"}, "method.lam_mode")])
@pytest.mark.parametrize("name", MIXERS)
def test_invalid_values_are_rejected_naming_the_key(name, bad, match):
    with pytest.raises(ConfigError, match=match):
        build(name, **bad)


@pytest.mark.parametrize("name", MIXERS)
def test_wrong_target_shape_is_explained(name):
    x, _ = batch()
    with pytest.raises(ValueError, match="soft labels"):
        build(name).mix(x, torch.arange(B))


def test_cutmix_needs_images():
    with pytest.raises(ValueError, match="B×C×H×W"):
        build("cutmix").mix(torch.randn(B, 5), torch.eye(B))


def test_erm_step_is_plain_cross_entropy():
    torch.manual_seed(4)
    model = torch.nn.Linear(6, 4)
    x, labels = torch.randn(8, 6), torch.randint(0, 4, (8,))
    out = METHODS.build({"name": "erm"}, num_classes=4).step(model, (x, labels),
                                                              SoftTargetCrossEntropy())
    expected = torch.nn.functional.cross_entropy(model(x), labels)
    assert torch.allclose(out.loss, expected)


def test_label_smoothing_matches_torch():
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    ours = SoftTargetCrossEntropy(0.1)(logits, labels)
    assert torch.allclose(ours, torch.nn.functional.cross_entropy(logits, labels,
                                                                  label_smoothing=0.1))
