"""Methods with their own step: manifoldmix, regmixup, snapmix, puzzlemix, attentivemix,
transmix, alignmix.

Per method: shapes and dtypes, valid mixed targets, λ consistent with what was mixed, prob=0
is plain CE, determinism, config errors, a step under DDP, and a 1-epoch run on digits.
Batches often use label == index (K = B) so a mixed target row names the sample's partner."""
import math

import pytest
import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from conftest import FAST, make_cfg, steps_that_never_wait, Recorder

from mixbench.engine.checkpoint import save_checkpoint
from mixbench.app.train import train
from mixbench.errors import ConfigError
from mixbench.losses import CrossEntropy
from mixbench.methods.alignmix import align_and_mix, logsumexp, sinkhorn_plan
from mixbench.methods.attentivemix import attentive_batch
from mixbench.methods.base import MixResult
from mixbench.methods.puzzlemix import puzzle_batch, to_blocks
from mixbench.methods.snapmix import class_activation_maps, snapmix_batch
from mixbench.methods.transmix import attention_label_weight, class_token_attention
from mixbench.components import BACKBONES, METHODS

B, K, SIDE = 8, 8, 16
METHOD_NAMES = ["manifoldmix", "regmixup", "snapmix", "puzzlemix", "attentivemix", "transmix",
                "alignmix"]


@pytest.fixture(scope="module")
def feature_ckpt(tmp_path_factory):
    """A checkpoint in mixbench's format holding a small_cnn (4×4 feature map on 16×16)."""
    torch.manual_seed(123)
    config = {"name": "small_cnn", "width": 8}
    network = BACKBONES.build(config, num_classes=K, in_channels=1)
    path = tmp_path_factory.mktemp("frozen") / "last.pt"
    save_checkpoint(path, {"model": network.state_dict(), "config": {"backbone": config}})
    return path


def build(name, feature_ckpt=None, **kwargs):
    if name == "attentivemix":
        kwargs.setdefault("feature_ckpt", str(feature_ckpt))
    return METHODS.build({"name": name, **kwargs}, num_classes=K)


def small_model(**kwargs):
    return BACKBONES.build({"name": "small_cnn", "width": 8, **kwargs}, num_classes=K,
                           in_channels=1)


def tiny_vit():
    return BACKBONES.build({"name": "timm", "model_name": "vit_tiny_patch16_224",
                            "model_kwargs": {"img_size": SIDE, "patch_size": 4, "depth": 2}},
                           num_classes=K, in_channels=1)


def model_for(name):
    """TransMix needs a ViT; every other method here runs on the small CNN."""
    return tiny_vit() if name == "transmix" else small_model()


def image_batch():
    return torch.randn(B, 1, SIDE, SIDE), torch.arange(B)


def partners(y):
    off = y.clone()
    off.fill_diagonal_(0)
    return torch.where(off.sum(1) > 0, off.argmax(1), torch.arange(len(y)))


# --- shared checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_step_gives_a_finite_loss_and_gradients(name, feature_ckpt):
    torch.manual_seed(0)
    model = model_for(name)
    x, labels = image_batch()
    x_before = x.clone()
    out = build(name, feature_ckpt).step(model, (x, labels), CrossEntropy())
    assert out.loss.dim() == 0 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert out.logits.shape[1] == K and out.logits.shape[0] in (B, 2 * B)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.equal(x, x_before), "the batch must not be modified in place"


# PuzzleMix's official graph cut runs on the host by design (as the authors'): its
# simplified variant is the one that must not wait
@pytest.mark.parametrize("name,options", [(name, {"variant": "simplified"} if name == "puzzlemix"
                                           else {}) for name in METHOD_NAMES + ["rankmixup"]]
                         + [(name, {"lam_mode": "sample"}) for name in ("manifoldmix", "regmixup")])
def test_step_never_waits_for_the_device(name, options, feature_ckpt):
    # On meta tensors reading a value on the host raises and HostToDeviceCopies records host
    # data sent to them (see tests/test_methods.py): a step that passes, backward included,
    # never waits for its GPU.
    torch.manual_seed(0)
    model = model_for(name).to("meta")
    x = torch.empty(B, 1, SIDE, SIDE, device="meta")
    labels = torch.empty(B, dtype=torch.long, device="meta")
    # 4 steps: the random branches (TransMix: mixup or cutmix; AlignMix: where it mixes)
    outs = steps_that_never_wait(build(name, feature_ckpt, **options), model, (x, labels),
                                 CrossEntropy(), steps=4)
    assert all(out.logits.shape[1] == K for out in outs)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_mixed_targets_are_distributions_over_the_pair(name, feature_ckpt):
    torch.manual_seed(1)
    loss = Recorder()
    x, labels = image_batch()
    build(name, feature_ckpt).step(model_for(name), (x, labels), loss)
    targets = loss.calls[-1][1]
    assert targets.shape == (B, K) and targets.dtype == torch.float32
    assert (targets >= 0).all() and ((targets > 0).sum(1) <= 2).all()
    if name == "snapmix":  # CAM weights: each in [0, 1], not normalised (see the module)
        assert (targets <= 1 + 1e-6).all()
    else:
        assert torch.allclose(targets.sum(1), torch.ones(B), atol=1e-6)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_prob_zero_is_plain_cross_entropy(name, feature_ckpt):
    model = model_for(name)
    x, labels = image_batch()
    out = build(name, feature_ckpt, prob=0.0).step(model, (x, labels), CrossEntropy())
    assert torch.allclose(out.loss, F.cross_entropy(model(x), labels), atol=1e-6)
    assert out.info["lam"] == 1.0


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_same_seed_same_step(name, feature_ckpt):
    x, labels = image_batch()
    model = model_for(name).eval()  # BN statistics unchanged between the two runs
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(build(name, feature_ckpt).step(model, (x, labels), CrossEntropy()))
    assert torch.equal(outs[0].logits, outs[1].logits) and torch.equal(outs[0].loss, outs[1].loss)
    torch.manual_seed(8)
    other = build(name, feature_ckpt).step(model, (x, labels), CrossEntropy())
    assert not torch.equal(other.logits, outs[0].logits)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_steps_work_under_ddp(name, feature_ckpt, tmp_path):
    """Two steps through DistributedDataParallel (one process, gloo): the wrapper exposes
    only forward, so a method reaching for the backbone's parts must unwrap it."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        model = DistributedDataParallel(model_for(name))
        method = build(name, feature_ckpt)
        for _ in range(2):
            out = method.step(model, image_batch(), CrossEntropy())
            out.loss.backward()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["manifoldmix", "snapmix", "alignmix"])
def test_backbone_without_stages_is_refused(name):
    timm_model = BACKBONES.build({"name": "timm", "model_name": "resnet10t"}, num_classes=K,
                                 in_channels=1)
    with pytest.raises(ConfigError, match="mixbench's backbones"):
        build(name).step(timm_model, image_batch(), CrossEntropy())


@pytest.mark.parametrize("name", ["snapmix", "puzzlemix", "attentivemix", "transmix"])
def test_region_mixers_need_image_classification(name, feature_ckpt):
    method = build(name, feature_ckpt)
    mlp = BACKBONES.build({"name": "mlp"}, num_classes=K, in_channels=6)
    with pytest.raises(ConfigError, match="image batches"):
        method.step(mlp, (torch.randn(B, 6), torch.arange(B)), CrossEntropy())
    with pytest.raises(ConfigError, match="classification"):
        method.step(small_model(), (torch.randn(B, 1, SIDE, SIDE), torch.randn(B)),
                    CrossEntropy())


@pytest.mark.parametrize("name,bad,match", [
    ("manifoldmix", {"layers": []}, "method.layers"),
    ("manifoldmix", {"layers": [-1]}, "method.layers"),
    ("manifoldmix", {"alpha": 0.0}, "method.alpha"),
    ("regmixup", {"eta": -1.0}, "method.eta"),
    ("regmixup", {"alpha": -2.0}, "method.alpha"),
    ("snapmix", {"prob": 2.0}, "method.prob"),
    ("puzzlemix", {"block_nums": []}, "method.block_nums"),
    ("puzzlemix", {"block_nums": [0, 2]}, "method.block_nums"),
    ("puzzlemix", {"clean_weight": -1.0}, "method.clean_weight"),
    ("attentivemix", {"top_k": 0}, "method.top_k"),
    ("attentivemix", {"grid": 0}, "method.grid"),
    ("transmix", {"cutmix_alpha": 0.0}, "method.cutmix_alpha"),
    ("transmix", {"switch_prob": 1.5}, "method.switch_prob"),
    ("transmix", {"attention_share": -0.1}, "method.attention_share"),
    ("alignmix", {"epsilon": 0.0}, "method.epsilon"),
    ("alignmix", {"sinkhorn_iters": 0}, "method.sinkhorn_iters"),
    ("alignmix", {"sinkhorn_tol": 0.0}, "method.sinkhorn_tol"),
    ("alignmix", {"input_prob": 2.0}, "method.input_prob"),
])
def test_bad_values_are_rejected_naming_the_key(name, bad, match, feature_ckpt):
    with pytest.raises(ConfigError, match=match):
        build(name, feature_ckpt, **bad)


# --- manifoldmix -----------------------------------------------------------------------------
@pytest.mark.parametrize("lam_mode", ["batch", "sample"])
def test_manifoldmix_mixes_hidden_states_at_the_reported_layer(lam_mode):
    model = small_model().eval()
    x, labels = image_batch()
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        loss = Recorder()
        out = build("manifoldmix", lam_mode=lam_mode).step(model, (x, labels), loss)
        targets, layer = loss.calls[0][1], out.info["layer"]
        seen.add(layer)
        lam = torch.full((B,), out.info["lam"]) if lam_mode == "batch" else out.info["lam"]
        perm = partners(targets)
        mixed = perm != torch.arange(B)
        assert torch.allclose(targets.diagonal()[mixed], lam[mixed], atol=1e-6)

        def mix(h):
            w = lam.view(-1, *([1] * (h.dim() - 1)))
            return w * h + (1 - w) * h[perm]
        assert torch.allclose(out.logits, model.forward_mixed(x, mix, layer), atol=1e-5)
    assert seen == {0, 2, 3}


def test_manifoldmix_layer_beyond_the_backbone_is_refused():
    with pytest.raises(ConfigError, match="method.layers"):
        build("manifoldmix", layers=[0, 9]).step(small_model(), image_batch(),
                                                 CrossEntropy())


# --- regmixup --------------------------------------------------------------------------------
def test_regmixup_is_clean_ce_plus_eta_times_mixup_ce():
    model = small_model().eval()
    x, labels = image_batch()
    torch.manual_seed(3)
    loss = Recorder()
    out = build("regmixup", eta=0.5).step(model, (x, labels), loss)
    (clean_logits, clean_t), (mixed_logits, mixed_t) = loss.calls
    assert torch.equal(clean_t, torch.eye(K))
    lam = out.info["lam"]
    perm = partners(mixed_t)
    own = torch.where(perm == torch.arange(B), 1.0, lam)  # a sample paired with itself
    assert 0 < lam < 1 and torch.allclose(mixed_t.diagonal(), own)
    assert torch.allclose(out.logits[:B], model(x), atol=1e-5)
    assert torch.allclose(out.logits[B:], model(lam * x + (1 - lam) * x[perm]), atol=1e-5)
    ce = CrossEntropy()
    assert torch.allclose(out.loss, ce(clean_logits, clean_t) + 0.5 * ce(mixed_logits, mixed_t))


# --- snapmix ---------------------------------------------------------------------------------
def constant_images():
    """Image i is constant with value i: pasted pixels show where they came from."""
    return torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, SIDE, SIDE).clone()


def test_snapmix_pastes_one_box_from_the_partner_and_reports_its_area():
    torch.manual_seed(4)
    for _ in range(10):
        x, y = constant_images(), torch.eye(B)
        uniform = torch.full((B, SIDE, SIDE), 1.0 / SIDE ** 2)
        lam_t, lam_s = torch.rand(2).tolist()
        result = snapmix_batch(x, y, uniform, lam_t, lam_s)
        if result.lam == 1.0:
            assert torch.equal(result.x, x)
            continue
        # B×H×W (self-pairs paste their own values); resizing a constant patch leaves
        # rounding errors, hence the tolerance
        pasted = ~torch.isclose(result.x, x, atol=1e-4).all(1)
        j = partners(result.y)
        box = pasted[j != torch.arange(B)][0]
        rows, cols = box.any(1).sum(), box.any(0).sum()
        assert box.sum() == rows * cols, "the pasted area is one box"
        assert abs(1 - box.float().mean().item() - result.lam) < 1e-6
        for i in torch.nonzero(j != torch.arange(B)).flatten().tolist():
            assert torch.allclose(result.x[i][:, pasted[i]], torch.tensor(float(j[i])),
                                  atol=1e-4)
        # uniform maps: the weight of the image's own class is the area it keeps
        own = result.y.diagonal()
        assert torch.allclose(own[j != torch.arange(B)], torch.tensor(result.lam), atol=1e-5)


def test_snapmix_label_weights_follow_cam_mass():
    torch.manual_seed(5)
    x, y = constant_images(), torch.eye(B)
    lam_t, lam_s = 0.5, 0.5
    # every map's mass in one pixel: the own weight is 0 if the box covers it, else 1
    cams = torch.zeros(B, SIDE, SIDE)
    cams[:, 0, 0] = 1.0
    torch.manual_seed(6)
    result = snapmix_batch(x, y, cams, lam_t, lam_s)
    covered = ~(result.x[:, :, 0, 0] == x[:, :, 0, 0]).all(1)
    j = partners(result.y)
    expected_own = torch.where(covered, 0.0, 1.0)
    mixed = j != torch.arange(B)
    assert torch.allclose(result.y.diagonal()[mixed], expected_own[mixed])
    # flat maps (no mass) fall back to the areas: targets sum to 1
    result = snapmix_batch(x, y, torch.zeros(B, SIDE, SIDE), lam_t, lam_s)
    assert torch.allclose(result.y.sum(1), torch.ones(B))


def test_feature_map_and_head_give_the_logits_so_cams_are_class_evidence():
    torch.manual_seed(0)
    for name in ("small_cnn", "preactresnet18"):
        channels = 1 if name == "small_cnn" else 3
        model = BACKBONES.build({"name": name}, num_classes=K, in_channels=channels).eval()
        x = torch.randn(2, channels, SIDE, SIDE)
        with torch.no_grad():
            fmap = model.feature_map(x)
            assert fmap.dim() == 4
            assert torch.allclose(model.head(fmap.mean((2, 3))), model(x), atol=1e-5)
            cams = class_activation_maps(model, x, torch.tensor([1, 2]))
        assert cams.shape == (2, SIDE, SIDE) and (cams >= 0).all()
        assert torch.allclose(cams.sum((1, 2)), torch.ones(2), atol=1e-5)


# --- puzzlemix -------------------------------------------------------------------------------
def labelled_blocks(n):
    """Every block of every image has its own value: 100·image + block."""
    values = (100 * torch.arange(B)[:, None] + torch.arange(n * n)[None]).float()
    cell = SIDE // n
    return values.view(B, 1, n, n).repeat_interleave(cell, 2).repeat_interleave(cell, 3)


@pytest.mark.parametrize("transport", [False, True])
@pytest.mark.parametrize("n", [2, 4])
def test_puzzlemix_blocks_come_from_the_pair_lambda_is_the_own_share(n, transport):
    torch.manual_seed(9)
    x, y = labelled_blocks(n), torch.eye(B)
    saliency = torch.rand(B, SIDE, SIDE)
    cells = n * n
    for lam in (0.2, 0.5, 0.8):
        result = puzzle_batch(x, y, saliency, lam, n, transport)
        k = round((1 - lam) * cells)
        assert result.lam == pytest.approx(1 - k / cells)
        j = partners(result.y)
        sal = F.avg_pool2d(saliency[:, None], SIDE // n).flatten(1)
        sal = sal / sal.sum(1, keepdim=True)  # each image's saliency sums to 1
        values = to_blocks(result.x, n).flatten(2)[..., 0]  # B×cells: the block labels
        source = torch.div(values, 100, rounding_mode="floor").long()
        block = (values % 100).long()
        for i in torch.nonzero(j != torch.arange(B)).flatten().tolist():
            from_partner = source[i] == j[i]
            assert ((source[i] == i) | from_partner).all()
            assert from_partner.sum() == k
            assert torch.allclose(result.y[i, i], torch.tensor(result.lam))
            if transport:  # each image brings its most salient blocks
                want_p = set(torch.topk(sal[j[i]], k).indices.tolist())
                want_o = set(torch.topk(sal[i], cells - k).indices.tolist())
                assert set(block[i][from_partner].tolist()) == want_p
                assert set(block[i][~from_partner].tolist()) == want_o
            else:  # blocks stay in place; the partner's are where it beats the image most
                assert torch.equal(block[i], torch.arange(cells))
                score = sal[j[i]] - sal[i]
                taken = torch.nonzero(from_partner).flatten()
                assert score[taken].min() >= score[~from_partner].max()


def test_puzzlemix_saliency_is_the_input_gradient_norm():
    torch.manual_seed(10)
    model = small_model()
    x, labels = image_batch()
    method = build("puzzlemix", clean_weight=1.0)  # a clean term: the pass in train mode
    y = F.one_hot(labels, K).float()
    saliency, clean_loss = method.saliency(model, x, y, CrossEntropy())
    x_in = x.clone().requires_grad_(True)
    expected_loss = F.cross_entropy(model(x_in), labels)
    (grad,) = torch.autograd.grad(expected_loss, x_in)
    assert torch.allclose(clean_loss, expected_loss, atol=1e-6)
    assert torch.allclose(saliency, grad.square().mean(1).sqrt(), atol=1e-7)
    assert model.training


def test_puzzlemix_needs_a_grid_that_divides_the_image():
    with pytest.raises(ConfigError, match="method.block_nums"):
        build("puzzlemix", block_nums=[3, 5]).step(small_model(), image_batch(),
                                                   CrossEntropy())


# --- attentivemix ----------------------------------------------------------------------------
def test_attentivemix_pastes_the_partners_top_cells():
    torch.manual_seed(11)
    x, y = constant_images(), torch.eye(B)
    attention = torch.rand(B, 4, 4)
    result = attentive_batch(x, y, attention, k=3, top_cells_of="partner")
    j = partners(result.y)
    pasted = ~(result.x == x).all(1)
    cells = pasted.view(B, 4, SIDE // 4, 4, SIDE // 4).any(4).any(2).flatten(1)
    for i in torch.nonzero(j != torch.arange(B)).flatten().tolist():
        assert set(torch.nonzero(cells[i]).flatten().tolist()) == \
            set(torch.topk(attention[j[i]].flatten(), 3).indices.tolist())
        assert (result.x[i][:, pasted[i]] == j[i]).all()
    mixed = j != torch.arange(B)
    own = 1 - pasted.float().mean((1, 2))
    assert torch.allclose(result.lam[mixed], own[mixed]) and torch.allclose(
        result.lam[mixed], torch.full((int(mixed.sum()),), 1 - 3 / 16))
    assert torch.allclose(result.y.diagonal()[mixed], result.lam[mixed])


def test_attentivemix_own_keeps_the_images_top_cells():
    # OpenMixup's form: each image keeps its own k most attended cells, the partner fills
    # the rest; OpenMixup's 7×7 grid upsampled (nearest) to 32×32 has cells of 4 or 5 px
    torch.manual_seed(13)
    side = 32
    x = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 1, side, side)
    y, attention = torch.eye(B), torch.rand(B, 7, 7)
    result = attentive_batch(x, y, attention, k=10, top_cells_of="own")
    j = partners(result.y)
    cell = torch.arange(side) * 7 // side  # pixel i lies in cell ⌊7i/32⌋
    for i in torch.nonzero(j != torch.arange(B)).flatten().tolist():
        top = torch.zeros(49, dtype=torch.bool)
        top[torch.topk(attention[i].flatten(), 10).indices] = True
        keep = top.view(7, 7)[cell][:, cell]
        assert torch.equal(result.x[i, 0] == i, keep)
        assert result.lam[i] == pytest.approx(keep.float().mean().item())
        assert result.y[i, i] == pytest.approx(result.lam[i].item())


def test_attentivemix_draws_k_as_openmixup(feature_ckpt, monkeypatch):
    # top_k: null with own cells: k = min(max(1, ⌊λ·cells⌋), cells), λ ~ Beta(α, α)
    from mixbench.methods import attentivemix as module

    seen = []
    monkeypatch.setattr(module, "attentive_batch",
                        lambda x, y, att, k, mode: seen.append((k, mode)) or
                        MixResult(x, y, torch.ones(len(x))))
    method = build("attentivemix", feature_ckpt, grid=7)
    for lam, k in [(0.5, 24), (0.01, 1), (0.999, 48)]:
        monkeypatch.setattr(method._beta, "one", lambda lam=lam: lam)
        method.step(small_model(), image_batch(), CrossEntropy())
        assert seen[-1] == (k, "own")


def test_attentivemix_uses_the_frozen_checkpoint_network(feature_ckpt):
    torch.manual_seed(12)
    method = build("attentivemix", feature_ckpt)
    model = small_model()
    x, labels = image_batch()
    out = method.step(model, (x, labels), CrossEntropy())
    out.loss.backward()
    frozen = method.frozen_network(x)
    saved = torch.load(feature_ckpt, weights_only=True)["model"]
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in saved.items())
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert method.state_dict() == {}


def test_attentivemix_checkpoint_errors(tmp_path, feature_ckpt):
    with pytest.raises(ConfigError, match="method.feature_ckpt"):
        METHODS.build({"name": "attentivemix"}, num_classes=K)
    with pytest.raises(ConfigError, match="method.feature_ckpt"):
        build("attentivemix", feature_ckpt=tmp_path / "nosuch")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="method.feature_ckpt.*cannot be read"):
        build("attentivemix", feature_ckpt=corrupt)
    plain = tmp_path / "plain.pt"
    torch.save(small_model().state_dict(), plain)
    with pytest.raises(ConfigError, match="method.feature_ckpt"):
        build("attentivemix", feature_ckpt=plain)
    with pytest.raises(ConfigError, match="method.top_k"):  # 16 cells in a 4×4 map
        build("attentivemix", feature_ckpt, top_k=16, grid=None).step(small_model(), image_batch(),
                                                           CrossEntropy())


# --- transmix ------------------------------------------------------------------------------
def test_transmix_needs_a_vision_transformer():
    with pytest.raises(ConfigError, match="ViT"):
        build("transmix").step(small_model(), image_batch(), CrossEntropy())


def test_class_token_attention_matches_timms_attention_weights():
    torch.manual_seed(13)
    vit = tiny_vit().eval()
    attn = vit.model.blocks[-1].attn
    attn.fused_attn = False  # timm then passes the weights through attn_drop: catch them there
    seen = {}
    attn.attn_drop.register_forward_hook(lambda m, args, out: seen.setdefault("w", out))
    attn.register_forward_hook(lambda m, args, out: seen.setdefault("tokens", args[0]))
    with torch.no_grad():
        vit(image_batch()[0])
        ours = class_token_attention(attn, seen["tokens"], vit.model.num_prefix_tokens)
    expected = seen["w"][:, :, 0, vit.model.num_prefix_tokens:].mean(1)
    assert ours.shape == (B, (SIDE // 4) ** 2) and torch.allclose(ours, expected, atol=1e-6)


def test_transmix_partner_weight_mixes_attention_in_the_box_with_the_area():
    attention = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    box = torch.tensor([0.0, 1.0, 0.0, 1.0])
    weight = attention_label_weight(attention, box, area=0.3, attention_share=0.5)
    assert torch.allclose(weight, torch.tensor([0.5 * 0.6 + 0.15, 0.5 * 0.5 + 0.15]))


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_transmix_cutmix_labels(share):
    vit = tiny_vit().eval()
    x, labels = image_batch()
    for seed in range(4):
        torch.manual_seed(seed)
        loss = Recorder()
        out = build("transmix", switch_prob=1.0, attention_share=share).step(vit, (x, labels),
                                                                            loss)
        targets, lam = loss.calls[0][1], out.info["lam"]
        j = partners(targets)
        mixed = j != torch.arange(B)
        assert out.info["cutmix"] and lam.shape == (B,)
        assert torch.allclose(targets.diagonal()[mixed], lam[mixed], atol=1e-6)
        if share == 0.0:  # the area alone: cutmix's λ
            assert torch.allclose(lam, torch.full((B,), out.info["area_lam"]), atol=1e-6)


def test_transmix_mixup_batches_keep_lambda():
    torch.manual_seed(14)
    loss = Recorder()
    out = build("transmix", switch_prob=0.0).step(tiny_vit(), image_batch(), loss)
    assert not out.info["cutmix"] and isinstance(out.info["lam"], float)
    j = partners(loss.calls[0][1])
    mixed = j != torch.arange(B)
    assert torch.allclose(loss.calls[0][1].diagonal()[mixed], torch.tensor(out.info["lam"]))


# --- alignmix --------------------------------------------------------------------------------
def test_alignmix_logsumexp_matches_torch_on_wide_ranges():
    torch.manual_seed(14)
    x = torch.randn(6, 7, 9) * 200  # most terms e^-100 or less below the row's largest
    x[0, 0] = torch.tensor([0.0] + [-1e4] * 8)  # one term carries the whole sum
    x[1, 1] = 3.0  # equal terms: log 9 + 3
    for dim in (1, 2):
        assert torch.allclose(logsumexp(x, dim), torch.logsumexp(x, dim), rtol=1e-6, atol=0)
    assert logsumexp(x, 2)[1, 1].item() == pytest.approx(3.0 + math.log(9), rel=1e-6)


def test_sinkhorn_plan_has_uniform_marginals():
    torch.manual_seed(15)
    plan = sinkhorn_plan(torch.rand(3, 5, 5) * 4, epsilon=0.5, iters=200)
    assert torch.allclose(plan.sum(2), torch.full((3, 5), 0.2), atol=1e-4)
    assert torch.allclose(plan.sum(1), torch.full((3, 5), 0.2), atol=1e-4)


def test_sinkhorn_tolerance_stops_at_the_first_small_enough_change(monkeypatch):
    torch.manual_seed(15)
    cost = torch.rand(3, 5, 5) * 4
    fixed = [sinkhorn_plan(cost, epsilon=0.5, iters=k) for k in range(1, 31)]
    # the change of the potential per iteration shrinks: the rule stops after k iterations,
    # where k grows as the tolerance shrinks, and gives exactly the k-iteration plan
    stops = []
    for tol in (1e3, 1e-1, 1e-3, 1e-5):
        plan = sinkhorn_plan(cost, epsilon=0.5, iters=30, tol=tol)
        stops.append(next(k for k, p in enumerate(fixed, 1) if torch.equal(p, plan)))
    assert stops[0] == 1 and stops == sorted(stops) and stops[-1] > stops[1]
    # the method option reaches the plan
    import mixbench.methods.alignmix as alignmix

    tolerances = []
    monkeypatch.setattr(alignmix, "sinkhorn_plan", lambda cost, epsilon, iters, tol: (
        tolerances.append(tol) or sinkhorn_plan(cost, epsilon, iters, tol)))
    out = build("alignmix", sinkhorn_tol=0.1, input_prob=0.0).step(
        small_model().eval(), image_batch(), Recorder())
    assert out.info["aligned"] and tolerances == [0.1]


@pytest.mark.parametrize("direction", [0, 1])
def test_alignmix_undoes_a_spatial_shuffle(direction):
    """If the partner's feature map is the image's with positions shuffled, aligning it first
    makes the mix equal to the image's (direction 0) or the partner's (direction 1) map."""
    torch.manual_seed(16)
    h = torch.randn(1, 6, 3, 3) * 3
    shuffle = torch.randperm(9)
    partner = h.flatten(2)[:, :, shuffle].view_as(h)
    batch = torch.cat([h, partner])
    perm = torch.tensor([1, 0])
    mixed = align_and_mix(batch, perm, 0.3, direction, epsilon=0.05, iters=200)
    expected = batch[0] if direction == 0 else batch[1]
    assert torch.allclose(mixed[0], expected, atol=1e-3)
    # without alignment the mix would differ from it
    assert not torch.allclose(0.3 * batch[0] + 0.7 * batch[1], expected, atol=1e-1)


def test_alignmix_mixes_the_last_feature_map_or_the_input():
    model = small_model().eval()
    x, labels = image_batch()
    seen = set()
    for seed in range(10):
        torch.manual_seed(seed)
        loss = Recorder()
        out = build("alignmix").step(model, (x, labels), loss)
        targets, lam = loss.calls[0][1], out.info["lam"]
        j = partners(targets)
        mixed = j != torch.arange(B)
        assert torch.allclose(targets.diagonal()[mixed], torch.full((int(mixed.sum()),), lam))
        seen.add(out.info["aligned"])
        if out.info["aligned"]:
            expected = model.forward_mixed(x, lambda h: align_and_mix(
                h, j, lam, out.info["direction"], 0.1, 100), len(model.stages) + 1)
        else:
            expected = model(lam * x + (1 - lam) * x[j])
        assert torch.allclose(out.logits, expected, atol=1e-4)
    assert seen == {True, False}


# --- end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def erm_run(tmp_path_factory):
    """A 1-epoch ERM run on digits: the frozen network of the attentivemix run."""
    run_dir = tmp_path_factory.mktemp("erm")
    train(make_cfg(*FAST), run_dir)
    return run_dir


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_one_epoch_on_digits(name, cfg_factory, tmp_path, erm_run):
    extra = {"attentivemix": [f"method.feature_ckpt={erm_run}", "method.top_k=1"],
             "transmix": ["backbone=timm", "backbone.model_name=vit_tiny_patch16_224",
                          "+backbone.model_kwargs.img_size=8",
                          "+backbone.model_kwargs.patch_size=2",
                          "+backbone.model_kwargs.depth=2"]}.get(name, [])
    results = train(cfg_factory(f"+method={name}", *extra), tmp_path)
    assert results["status"] == "completed" and results["config"]["method"]["name"] == name
    assert results["history"][0]["train_loss"] > 0 and 0 <= results["test"]["top1"] <= 1
