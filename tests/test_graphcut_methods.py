"""The graph-cut mixers: PuzzleMix (official and simplified variants) and Co-Mixup.

Both need gco (the `graphcut` extra, in `dev`): these tests do not skip without it."""
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import gco
from conftest import Recorder
from mixbench.components import BACKBONES, METHODS
from mixbench.errors import ConfigError
from mixbench.losses import CrossEntropy
from mixbench.methods.comixup import comix_labelling, comixup_batch
from mixbench.methods.puzzlemix import (apply_transport, graphcut_mask, puzzle_graphcut_batch,
                                        puzzle_terms, transport_plan)

B, K, SIDE = 8, 8, 16


def small_model(channels=1):
    return BACKBONES.build({"name": "small_cnn", "width": 8}, num_classes=K,
                           in_channels=channels)


def constant_images(b=B, side=SIDE):
    """Image i is the constant i + 1: a mixed pixel says how much of whom it holds."""
    return (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, 1, side,
                                                                             side).clone()


def build(name, **kwargs):
    return METHODS.build({"name": name, **kwargs}, num_classes=K)


# --- PuzzleMix, official -----------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 4, 8])
def test_puzzlemix_lambda_is_the_mask_share_and_targets_sum_to_one(n):
    torch.manual_seed(0)
    x, y = constant_images(), torch.eye(B)
    perm = torch.roll(torch.arange(B), 1)
    saliency = torch.rand(B, SIDE, SIDE) ** 4
    for lam in (0.3, 0.5, 0.7):
        result = puzzle_graphcut_batch(x, y, saliency, lam, n, perm, gco=gco, transport=False)
        assert result.x.shape == x.shape and result.y.shape == (B, K)
        assert torch.allclose(result.y.sum(1), torch.ones(B))
        own = (result.x - x[perm]) / (x - x[perm])  # the share of image i in each pixel
        assert set(own.unique().tolist()) <= {0.0, 0.5, 1.0}  # n_labels=3
        assert torch.allclose(own.flatten(1).mean(1), result.lam)
        assert torch.allclose(result.y[torch.arange(B), torch.arange(B)], result.lam)
        assert torch.allclose(result.y[torch.arange(B), perm], 1 - result.lam)


def test_puzzlemix_graph_cut_keeps_the_salient_blocks_of_each_image():
    n = 4
    own = torch.zeros(2, SIDE, SIDE)
    own[0, :8, :8] = 1.0   # image 0: its top-left quarter is salient
    own[1, 8:, 8:] = 1.0   # image 1: its bottom-right quarter
    pixels = torch.zeros(2, 1, SIDE, SIDE)  # flat images: no data smoothness term
    perm = torch.tensor([1, 0])
    keep, take, edge_x, edge_y, _ = puzzle_terms(pixels, own, perm, n, beta=1.2, gamma=0.5,
                                                 neigh_size=4)
    mask = graphcut_mask(gco, keep[0].numpy(), take[0].numpy(), edge_x[0].numpy(),
                         edge_y[0].numpy(), 0.5, 1.2 / n / 16, 0.2, 3)
    assert mask.shape == (n, n)
    assert (mask[:2, :2] == 1).all()  # image 0 keeps its salient blocks
    assert (mask[2:, 2:] == 0).all()  # and takes its partner's


def test_puzzlemix_transport_is_a_permutation_into_the_used_blocks():
    torch.manual_seed(1)
    for m in (2, 4, 8):
        sal = torch.rand(4, m, m)
        sal = sal / sal.sum((1, 2), keepdim=True)
        full = transport_plan(torch.ones(4, 1, m, m), sal, 0.8)
        eye = torch.ones(4, m * m)
        assert torch.equal(full.sum(1), eye) and torch.equal(full.sum(2), eye)
        mask = (torch.rand(4, 1, m, m) > 0.5).float()
        plan = transport_plan(mask, sal, 0.8)
        assert (plan.sum(2) <= 1).all()  # a source goes to one destination at most
        assert (plan.sum(1)[mask.flatten(1) > 0] == 1).all()  # each used block gets one
    # a single used block near the salient one receives it
    sal = torch.zeros(1, 4, 4)
    sal[0, 0, 0] = 1.0
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 1, 1] = 1.0  # block 5
    plan = transport_plan(mask, sal, 0.8)
    assert plan[0, 0, 5] == 1 and plan[0, :, 5].sum() == 1
    x = (torch.arange(16.0) + 1).view(1, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    moved = apply_transport(x, plan, 4)
    assert (moved[0, 0, 2:4, 2:4] == 1).all()  # block 0's content now in block 5


def test_puzzlemix_official_step_has_no_clean_term_and_keeps_bn_statistics():
    torch.manual_seed(2)
    model = small_model()
    x, labels = torch.randn(B, 1, SIDE, SIDE), torch.arange(B)
    method = build("puzzlemix", block_nums=[4])
    assert method.variant == "official" and method.clean_weight == 0.0
    before = [b.clone() for b in model.buffers()]
    saliency, _ = method.saliency(model, x, F.one_hot(labels, K).float(), CrossEntropy())
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))  # eval mode
    assert model.training and saliency.shape == (B, SIDE, SIDE)
    loss = Recorder()
    out = method.step(model, (x, labels), loss)
    logits, targets = loss.calls[-1]
    assert torch.allclose(out.loss, CrossEntropy()(logits, targets))
    assert targets.shape == (B, K) and torch.allclose(targets.sum(1), torch.ones(B))
    assert out.info["lam"].shape == (B,)


# grids of 2 and 4 keep the transport cheap (16×16 blocks cost seconds on a loaded CPU)
@pytest.mark.parametrize("name,options", [("puzzlemix", {"block_nums": [2, 4]}),
                                          ("puzzlemix", {"block_nums": [4], "n_labels": 2}),
                                          ("comixup", {"partition": 4})])
def test_same_seed_same_step(name, options):
    model = small_model().eval()
    x, labels = torch.randn(B, 1, SIDE, SIDE), torch.arange(B)
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(build(name, **options).step(model, (x, labels), CrossEntropy()))
    assert torch.equal(outs[0].logits, outs[1].logits) and torch.equal(outs[0].loss,
                                                                         outs[1].loss)
    assert not torch.equal(outs[0].logits, outs[2].logits)


def test_puzzlemix_simplified_variant_keeps_the_earlier_form():
    torch.manual_seed(3)
    model = small_model()
    x, labels = torch.randn(B, 1, SIDE, SIDE), torch.arange(B)
    method = build("puzzlemix", variant="simplified", block_nums=[4])
    assert method.clean_weight == 1.0
    loss = Recorder()
    out = method.step(model, (x, labels), loss)
    assert isinstance(out.info["lam"], float)
    assert round(out.info["lam"] * 16) == out.info["lam"] * 16  # whole blocks
    logits, targets = loss.calls[-1]
    clean_logits = loss.calls[0][0]  # the saliency pass: the clean term
    expected = CrossEntropy()(logits, targets) + CrossEntropy()(
        clean_logits, F.one_hot(labels, K).float())
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_puzzlemix_refuses_bad_options():
    with pytest.raises(ConfigError, match="method.variant"):
        build("puzzlemix", variant="paper")
    with pytest.raises(ConfigError, match="method.n_labels"):
        build("puzzlemix", n_labels=1)
    with pytest.raises(ConfigError, match="lam_mode"):
        build("puzzlemix", lam_mode="sample")
    with pytest.raises(ConfigError, match="method.block_nums"):
        build("puzzlemix", block_nums=[1])


# --- Co-Mixup ----------------------------------------------------------------------------
def test_comixup_targets_are_the_block_shares_of_the_inputs():
    torch.manual_seed(4)
    x, y = constant_images(), torch.eye(B)
    saliency = torch.rand(B, SIDE, SIDE) ** 8
    mixed, targets, shares = comixup_batch(x, y, saliency, gco=gco, partition=4)
    assert mixed.shape == x.shape and targets.shape == (B, K)
    assert torch.allclose(targets.sum(1), torch.ones(B))
    assert torch.allclose(shares.sum(1), torch.ones(B))
    assert torch.allclose(targets, shares)  # label i is input i
    assert (shares[:4, 4:] == 0).all() and (shares[4:, :4] == 0).all()  # within partitions
    # each pixel is its block's blend of inputs: the pixel mean is the share-weighted value
    assert torch.allclose(mixed.flatten(1).mean(1), shares @ x[:, 0, 0, 0], atol=1e-5)


def test_comixup_labelling_gives_each_block_unit_weight():
    torch.manual_seed(5)
    cost = -torch.rand(6, 4, 4)
    cost = cost / cost.flatten(1).sum(1).abs()[:, None, None]
    onehot = comix_labelling(gco, cost, torch.eye(6), alpha=2.0, beta=0.32, gamma=1.0,
                             eta=0.05, thres=0.83, niter=4)
    assert onehot.shape == (6, 4, 4, 6)
    assert torch.allclose(onehot.sum(-1), torch.ones(6, 4, 4))
    assert set(np.unique(onehot.numpy()).tolist()) <= {0.0, 0.5, 1.0}


def test_comixup_step_trains_on_the_mix_and_the_clean_batch():
    torch.manual_seed(6)
    model = small_model(3)
    x, labels = torch.randn(B, 3, SIDE, SIDE), torch.arange(B)
    loss = Recorder()
    out = build("comixup").step(model, (x, labels), loss)
    assert out.logits.shape == (B, K) and torch.isfinite(out.loss)
    clean_logits, _ = loss.calls[0]
    mixed_logits, targets = loss.calls[-1]
    expected = CrossEntropy()(mixed_logits, targets) + 2.0 * CrossEntropy()(
        clean_logits, F.one_hot(labels, K).float())
    assert torch.allclose(out.loss, expected, atol=1e-6)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_comixup_refuses_bad_options():
    with pytest.raises(ConfigError, match="method.alpha"):
        build("comixup", alpha=0.0)
    with pytest.raises(ConfigError, match="method.block_num"):
        build("comixup", block_num=3).step(small_model(), (torch.randn(B, 1, SIDE, SIDE),
                                                           torch.arange(B)), CrossEntropy())


# --- without gco -------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", [("puzzlemix", {}), ("comixup", {})])
def test_missing_gco_names_the_extra(monkeypatch, name, options):
    monkeypatch.setitem(sys.modules, "gco", None)  # `import gco` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'mixbench\[graphcut\]'"):
        build(name, **options)


def test_simplified_puzzlemix_needs_no_gco(monkeypatch):
    monkeypatch.setitem(sys.modules, "gco", None)
    out = build("puzzlemix", variant="simplified").step(
        small_model(), (torch.randn(B, 1, SIDE, SIDE), torch.arange(B)), CrossEntropy())
    assert torch.isfinite(out.loss)
