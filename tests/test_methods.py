"""Mixers: valid targets, λ consistent with what was pasted, prob=0, determinism, validation.

The batch uses label == index (K = B), so each mixed target row names its partner: exactly
the own class (weight λ) and the partner's (weight 1-λ)."""
import pytest
import torch
from conftest import HostToDeviceCopies

from mixbench.errors import ConfigError
from mixbench.losses import CrossEntropy
from mixbench.components import METHODS
from mixbench.methods.sample_mixing import mix_pairs

B, C, H, W = 16, 3, 8, 10
MIXERS = ["mixup", "cutmix", "mixup_cutmix", "fmix", "gridmix", "smoothmix", "resizemix",
          "saliencymix"]
# Mixers whose every pixel is either x's or the partner's (a binary mask or a pasted box).
BINARY = ["cutmix", "fmix", "gridmix", "resizemix", "saliencymix"]
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
    # (smoothmix's OpenMixup default weighs the own label by the pasted share: tested below)
    extra = {"label_weight": "kept"} if name == "smoothmix" else {}
    result = build(name, alpha=1.0, lam_mode=mode, **extra).mix_batch(x, y)
    assert result.x.shape == x.shape and result.x.dtype == x.dtype
    assert result.y.shape == y.shape and result.y.dtype == y.dtype
    assert torch.allclose(result.y.sum(1), torch.ones(B))
    assert ((result.y > 0).sum(1) <= 2).all() and (result.y >= 0).all()
    # own class weighs λ_i, except for a sample paired with itself (then it is all its own)
    self_paired = partners(result.y) == torch.arange(B)
    own_weight = torch.where(self_paired, torch.ones(B), lam_vector(result.lam))
    assert torch.allclose(result.y.diagonal(), own_weight, atol=1e-6)
    assert torch.equal(x, batch()[0]) and torch.equal(y, batch()[1]), \
        "inputs must not be modified in place"


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


def test_per_sample_cutmix_boxes_are_cutmix_boxes():
    # The table-driven per-sample boxes against box_bounds, CutMix's boxes written plainly:
    # the same half sizes for the same λ, and clipped areas with the same distribution.
    from mixbench.methods.sample_mixing import (box_area_lam, box_bounds, box_halves,
                                                cutmix_paste_weight)

    torch.manual_seed(4)
    lam = torch.rand(20000)
    weight, lam_kept = cutmix_paste_weight(lam, 12, 20)
    assert weight.shape == (20000, 1, 12, 20)
    weight = weight[:, 0]
    assert torch.allclose(lam_kept, 1 - weight.mean((1, 2)), atol=1e-6)
    rows, cols = weight.amax(2), weight.amax(1)
    assert torch.equal(weight, rows[:, :, None] * cols[:, None, :])  # one box each
    half_h, half_w = box_halves(lam, 12, 20)
    assert (rows.sum(1) <= 2 * half_h).all() and (cols.sum(1) <= 2 * half_w).all()
    off_border = ((rows[:, [0, -1]].sum(1) == 0) & (cols[:, [0, -1]].sum(1) == 0)
                  & (half_h > 0) & (half_w > 0))
    assert off_border.float().mean() > 0.1
    assert (rows.sum(1) == 2 * half_h)[off_border].all()  # not clipped: the full size
    assert (cols.sum(1) == 2 * half_w)[off_border].all()
    reference = box_area_lam(*box_bounds(lam, 12, 20), 12, 20)
    # two-sample Kolmogorov-Smirnov distance (0.021 would be p ≈ 0.0003 for the same law)
    grid = (torch.arange(240) + 0.5) / 240  # between the possible values k / (12·20)
    cdf = [torch.searchsorted(v.sort().values, grid, right=True) / len(v)
           for v in (lam_kept, reference)]
    assert (cdf[0] - cdf[1]).abs().max() < 0.021


@pytest.mark.parametrize("name", ["cutmix", "mixup_cutmix"])
def test_per_sample_boxes_pass_gradients_to_both_images(name):
    torch.manual_seed(6)
    x, y = batch()
    x.requires_grad_()
    extra = {"switch_prob": 1.0} if name == "mixup_cutmix" else {}
    build(name, lam_mode="sample", **extra).mix_batch(x, y).x.sum().backward()
    # every pixel of the mixed batch comes from one image or the other: gradients add up to 1
    # per mixed pixel, whatever image they reach
    assert torch.allclose(x.grad.sum(), torch.tensor(float(x.numel())))


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prob", [1.0, 0.5])
def test_mixing_never_waits_for_the_device(name, mode, prob):
    # Meta tensors have no values: .item(), .tolist(), bool() and nonzero() on them raise, and
    # HostToDeviceCopies records host data copied to them. A mixer that passes both never
    # waits for its GPU. Per-batch λ, boxes and masks are drawn on the host on purpose and
    # sent with host_to; constants cached on the first call are built once.
    torch.manual_seed(0)
    x = torch.empty(B, C, H, W, device="meta")
    y = torch.empty(B, B, device="meta")
    method = build(name, alpha=1.0, lam_mode=mode, prob=prob)
    method.mix_batch(x, y)
    with HostToDeviceCopies() as copies:
        for _ in range(4):  # with prob 0.5 per batch: mixed and unmixed batches
            result = method.mix_batch(x, y)
            assert result.x.device.type == "meta" and result.x.shape == x.shape
            assert result.y.device.type == "meta" and result.y.shape == y.shape
    assert not copies.found


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("mode", MODES)
def test_low_precision_channels_last_batches_mix_in_their_dtype(name, mode):
    # bf16 inputs (AMP pipelines that cast on the loader) in channels_last memory: the masks,
    # boxes and weights are built in float32 and must meet the batch's dtype and layout.
    torch.manual_seed(8)
    x, y = batch()
    x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = y.to(torch.bfloat16)
    result = build(name, alpha=1.0, lam_mode=mode).mix_batch(x, y)
    assert result.x.dtype == torch.bfloat16 and result.x.shape == x.shape
    assert result.y.dtype == torch.bfloat16
    assert torch.allclose(result.y.float().sum(1), torch.ones(B), atol=1e-2)
    if name in BINARY:  # every pixel is x's or its partner's, exactly
        j = partners(result.y.float())
        own, partner = x.float(), x.float()[j]
        out = result.x.float()
        assert ((out == own) | (out == partner)).all()


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("mode", MODES)
def test_prob_zero_returns_inputs_unchanged(name, mode):
    x, y = batch()
    result = build(name, prob=0.0, lam_mode=mode).mix_batch(x, y)
    assert result.x is x and result.y is y
    assert torch.all(lam_vector(result.lam) == 1.0)


def test_per_sample_prob_mixes_about_that_fraction():
    torch.manual_seed(3)
    x = torch.randn(4000, 1, 2, 2)
    y = torch.eye(10)[torch.randint(0, 10, (4000,))]
    mixer = METHODS.build({"name": "mixup", "prob": 0.3, "lam_mode": "sample"}, num_classes=10)
    lam = mixer.mix_batch(x, y).lam
    assert 0.25 < (lam < 1).float().mean().item() < 0.35


@pytest.mark.parametrize("name", MIXERS)
def test_per_sample_prob_leaves_unmixed_samples_exactly_as_they_were(name):
    torch.manual_seed(9)
    x, y = torch.rand(B, C, H, W), torch.eye(B)
    result = build(name, prob=0.5, lam_mode="sample").mix_batch(x, y)
    kept = result.lam == 1.0
    assert 0 < kept.sum() < B
    assert torch.equal(result.x[kept], x[kept]) and torch.equal(result.y[kept], y[kept])
    assert not torch.equal(result.x[~kept], x[~kept])


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
                                       ({"lam_mode": "pixel"}, "method.lam_mode"),
                                       ({"label_lam": "both"}, "method.label_lam"),
                                       ({"mix_until": 0.0}, "method.mix_until"),
                                       ({"mix_until": 1.5}, "method.mix_until")])
@pytest.mark.parametrize("name", MIXERS)
def test_invalid_values_are_rejected_naming_the_key(name, bad, match):
    with pytest.raises(ConfigError, match=match):
        build(name, **bad)


@pytest.mark.parametrize("name", MIXERS)
def test_wrong_target_shape_is_explained(name):
    x, _ = batch()
    with pytest.raises(ValueError, match="soft labels"):
        build(name).mix(x, torch.arange(B))


@pytest.mark.parametrize("name", [m for m in MIXERS if m != "mixup"])
def test_image_mixers_need_images(name):
    with pytest.raises(ValueError, match="B×C×H×W"):
        build(name).mix(torch.randn(B, 5), torch.eye(B))


def test_erm_step_is_plain_cross_entropy():
    torch.manual_seed(4)
    model = torch.nn.Linear(6, 4)
    x, labels = torch.randn(8, 6), torch.randint(0, 4, (8,))
    out = METHODS.build({"name": "erm"}, num_classes=4).step(model, (x, labels),
                                                              CrossEntropy())
    expected = torch.nn.functional.cross_entropy(model(x), labels)
    assert torch.allclose(out.loss, expected)


def test_label_smoothing_matches_torch():
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    ours = CrossEntropy(0.1)(logits, labels)
    assert torch.allclose(ours, torch.nn.functional.cross_entropy(logits, labels,
                                                                  label_smoothing=0.1))


# --- every mixer: λ is what was kept, the common options -----------------------------------

def kept_weight(result, x):
    """Per pixel, the weight w of x in x̃ = w·x + (1-w)·x[partner] (images are constants, so
    w is recoverable wherever the partner differs), and the partner of each sample."""
    j = partners(result.y)
    partner = x[j]
    diff = x - partner
    return (result.x - partner) / torch.where(diff != 0, diff, 1.0), j


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("mode", MODES)
def test_lambda_is_the_fraction_of_each_image_kept(name, mode):
    torch.manual_seed(11)
    checked = 0
    for _ in range(10):
        x, y = batch()
        result = build(name, alpha=1.0, lam_mode=mode).mix_batch(x, y)
        weight, j = kept_weight(result, x)
        mixed_pairs = j != torch.arange(B)
        checked += int(mixed_pairs.any())  # a box may be clipped away: then nothing is mixed
        lam = lam_vector(result.lam)
        assert torch.allclose(weight.mean((1, 2, 3))[mixed_pairs], lam[mixed_pairs], atol=1e-5)
        assert (weight > -1e-5).all() and (weight < 1 + 1e-5).all()
        if name in BINARY:  # each pixel is x's or the partner's, bit for bit
            assert ((result.x == x) | (result.x == x[j])).all()
        if mode == "batch" and name == "saliencymix":
            # one clipped box for the batch, whose clip is known on the device only: one λ,
            # sent as a B-vector (reading it back would wait for the device)
            assert torch.equal(lam, lam[:1].expand(B))
        elif mode == "batch":
            assert isinstance(result.lam, float)
    assert checked >= 5


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("mode", MODES)
def test_independent_label_lambda(name, mode):
    torch.manual_seed(12)
    x, y = batch()
    result = build(name, alpha=1.0, lam_mode=mode, label_lam="independent").mix_batch(x, y)
    lam, label_lam = lam_vector(result.lam), lam_vector(result.label_lam)
    assert not torch.allclose(lam, label_lam)
    assert torch.allclose(result.y.sum(1), torch.ones(B)) and (result.y >= 0).all()
    self_paired = partners(result.y) == torch.arange(B)
    own = torch.where(self_paired, torch.ones(B), label_lam)
    assert torch.allclose(result.y.diagonal(), own, atol=1e-6)  # targets follow λ'
    weight, j = kept_weight(result, x)  # inputs still follow λ
    assert torch.allclose(weight.mean((1, 2, 3))[j != torch.arange(B)],
                          lam[j != torch.arange(B)], atol=1e-5)


def test_independent_label_lambda_is_one_where_not_mixed():
    torch.manual_seed(13)
    x, y = batch()
    result = build("mixup", lam_mode="sample", prob=0.5, label_lam="independent").mix_batch(x, y)
    unmixed = result.lam == 1.0
    assert unmixed.any() and (result.label_lam[unmixed] == 1.0).all()
    assert (result.label_lam[~unmixed] < 1.0).all()


@pytest.mark.parametrize("name", MIXERS)
def test_mix_until_stops_mixing_after_that_fraction(name):
    torch.manual_seed(0)
    x, y = batch()
    mixer = build(name, mix_until=0.5)
    mixer.start_epoch(4, 10)  # 40% done: still mixing (one draw may paste an empty box)
    assert any(not torch.equal(mixer.mix_batch(x, y).y, y) for _ in range(5))
    mixer.start_epoch(5, 10)  # 50% done: stopped
    result = mixer.mix_batch(x, y)
    assert result.x is x and result.y is y and result.lam == 1.0


@pytest.mark.parametrize("name,bad,match", [
    ("mixup_cutmix", {"switch_prob": 1.5}, "method.switch_prob"),
    ("mixup_cutmix", {"cutmix_alpha": 0.0}, "method.cutmix_alpha"),
    ("fmix", {"decay_power": 0.0}, "method.decay_power"),
    ("gridmix", {"n_holes": [4, 2]}, "method.n_holes"),
    ("gridmix", {"n_holes": [0, 2]}, "method.n_holes"),
    ("resizemix", {"scope": [0.5, 1.2]}, "method.scope"),
    ("resizemix", {"scope": [0.8, 0.1]}, "method.scope"),
    ("resizemix", {"nosuch": 1}, "nosuch")])
def test_method_specific_values_are_checked(name, bad, match):
    with pytest.raises(ConfigError, match=match):
        build(name, **bad)


def test_beta_sampler_has_the_beta_moments():
    from mixbench.methods.sample_mixing import BetaSampler

    for alpha in (0.2, 1.0, 2.0):
        lam = BetaSampler(alpha).many(40000)
        assert lam.dtype == torch.float32 and ((lam >= 0) & (lam <= 1)).all()
        assert abs(lam.mean().item() - 0.5) < 0.01
        assert abs(lam.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.01
        assert 0.0 <= BetaSampler(alpha).one() <= 1.0


# --- what is specific to each mixer --------------------------------------------------------

@pytest.mark.parametrize("switch_prob,cut", [(0.0, False), (1.0, True)])
def test_mixup_cutmix_switches(switch_prob, cut):
    torch.manual_seed(14)
    x, y = batch()
    result = build("mixup_cutmix", switch_prob=switch_prob).mix_batch(x, y)
    j = partners(result.y)
    binary = ((result.x == x) | (result.x == x[j])).all()
    assert bool(binary) == cut


def test_mixup_cutmix_per_sample_uses_both():
    torch.manual_seed(15)
    x, y = batch()
    result = build("mixup_cutmix", lam_mode="sample", alpha=1.0, cutmix_alpha=1.0).mix_batch(x, y)
    j = partners(result.y)
    binary = ((result.x == x) | (result.x == x[j])).flatten(1).all(1)
    assert binary[j != torch.arange(B)].any() and not binary.all()


def pasted_region(result, x):
    return ~(result.x == x).all(1)  # B×H×W: pixels not kept from x


@pytest.mark.parametrize("mode", MODES)
def test_gridmix_cells_mask_is_constant_on_grid_cells(mode):
    torch.manual_seed(16)
    x, y = batch()
    pasted = pasted_region(build("gridmix", mask="cells", lam_mode=mode, alpha=1.0)
                           .mix_batch(x, y), x)
    # changes between neighbouring pixels happen on at most n_holes-1 ≤ 5 row (col) lines
    row_changes = (pasted[:, 1:] != pasted[:, :-1]).any(2).sum(1)
    col_changes = (pasted[:, :, 1:] != pasted[:, :, :-1]).any(1).sum(1)
    assert (row_changes <= 5).all() and (col_changes <= 5).all()
    assert (row_changes > 0).any()


def test_gridmix_cells_per_sample_masks_are_constant_on_the_drawn_grid():
    from mixbench.methods.mask_mixing import cell_indices

    def cell_index(size, g):  # pixel i lies in cell ⌊i·g/size⌋
        return torch.tensor([i * g // size for i in range(size)])

    table = cell_indices(10, 2, 6, torch.device("cpu"))
    assert all(torch.equal(table[g - 2], cell_index(10, g)) for g in range(2, 7))
    torch.manual_seed(18)
    for g in (2, 3, 5):
        mask = build("gridmix", mask="cells", n_holes=[g, g], lam_mode="sample").make_mask(
            torch.full((50,), 0.5), 10, 12).view(50, -1)
        cell = (cell_index(10, g)[:, None] * g + cell_index(12, g)[None, :]).view(1, -1)
        per_cell = [torch.zeros(50, g * g).scatter_reduce(1, cell.expand(50, -1), mask, how,
                                                          include_self=False)
                    for how in ("amin", "amax")]
        assert torch.equal(per_cell[0], per_cell[1])  # one value per cell
        assert 0.3 < mask.mean() < 0.7  # cells kept with probability λ


@pytest.mark.parametrize("mode", MODES)
def test_fmix_keeps_round_lambda_pixels(mode, monkeypatch):
    from mixbench.methods.sample_mixing import SampleMixer

    drawn = torch.tensor([0.3, 0.52, 0.77, 0.9] * 4)
    monkeypatch.setattr(SampleMixer, "sample_lam",
                        lambda self, b, device="cpu": 0.3 if mode == "batch" else drawn)
    x, y = batch()
    result = build("fmix", lam_mode=mode).mix_batch(x, y)
    lam = torch.full((B,), 0.3) if mode == "batch" else drawn
    expected = torch.round(lam * (H * W)) / (H * W)  # whole pixels: λ·H·W rounded
    assert torch.allclose(lam_vector(result.lam), expected)


def test_fmix_noise_power_falls_as_a_power_of_frequency():
    from mixbench.methods.mask_mixing import low_frequency_noise

    torch.manual_seed(5)
    decay = 3.0
    noise = low_frequency_noise(4000, 16, 16, decay, "cpu")
    power = torch.fft.rfft2(noise).abs().square().mean(0)  # average over images
    # along the first row of frequencies: |F(f)|² ∝ f^(-2δ), f = k/16
    slope = (power[0, 4] / power[0, 2]).log() / torch.log(torch.tensor(2.0))
    assert abs(slope.item() + 2 * decay) < 0.2


def test_keep_top_fraction_keeps_the_highest_pixels():
    from mixbench.methods.mask_mixing import keep_top_fraction

    scores, lam = torch.randn(64, 8, 10), torch.rand(64)
    mask = keep_top_fraction(scores, lam).view(64, -1).bool()
    assert torch.equal(mask.sum(1), torch.round(lam * 80).long())
    flat = scores.view(64, -1)
    lowest_kept = torch.where(mask, flat, torch.inf).amin(1)
    highest_dropped = torch.where(~mask, flat, -torch.inf).amax(1)
    one_level = (flat.amax(1) - flat.amin(1)) / 255  # ties only within one quantisation level
    assert (highest_dropped - lowest_kept <= one_level + 1e-6).all()


def test_shrink_index_is_nearest_interpolation_for_every_size():
    from mixbench.methods.mask_mixing import shrink_index

    for side in (28, 32, 96, 224):
        pixels = torch.arange(side, dtype=torch.float32).view(1, 1, side)
        for out in range(1, side + 1):
            expected = torch.nn.functional.interpolate(pixels, size=out, mode="nearest")
            assert torch.equal(shrink_index(out, side, "cpu"), expected.view(-1).long()), out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("side", [32, 96])  # at 96, ⌊i·96/74⌋ in float32 ≠ i·96//74 for some i
def test_resizemix_pastes_the_whole_partner_shrunk(mode, side):
    torch.manual_seed(17)
    x = torch.rand(B, C, side, side)
    x[:, :, 0, 0] = -1.0  # each image's top-left corner is marked
    y = torch.eye(B)
    result = build("resizemix", lam_mode=mode, alpha=1.0).mix_batch(x, y)
    lam, j = lam_vector(result.lam), partners(result.y)
    pasted = ~(result.x == x).all(1)
    for i in torch.nonzero(j != torch.arange(B)).flatten().tolist():
        rows, cols = pasted[i].any(1).nonzero().flatten(), pasted[i].any(0).nonzero().flatten()
        box = result.x[i][:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        # (λ is float32: its rounding error times 96² is up to ~1e-3 pixels)
        assert box.shape[1] * box.shape[2] == pytest.approx((1 - lam[i].item()) * side ** 2,
                                                            abs=0.01)
        assert box.shape[1] <= 0.8 * side and box.shape[2] <= 0.8 * side  # τ in scope
        assert (box[:, 0, 0] == -1.0).all()  # the partner's corner is the box's corner
        # the partner shrunk as torch's nearest-neighbour resize does it
        src = torch.nn.functional.interpolate(x[j[i]][None], size=box.shape[1:],
                                              mode="nearest")[0]
        assert torch.equal(box, src)


@pytest.mark.parametrize("mode", MODES)
def test_saliencymix_inside_box_covers_the_partners_salient_spot(mode):
    torch.manual_seed(18)
    x = torch.zeros(B, C, 32, 32)
    spots = torch.randint(4, 28, (B, 2))
    for i, (r, c) in enumerate(spots.tolist()):
        x[i, :, r - 1:r + 2, c - 1:c + 2] = 10.0 + i  # a bright blob, distinct per image
    y = torch.eye(B)
    result = build("saliencymix", box="inside", lam_mode=mode, alpha=1.0).mix_batch(x, y)
    lam, j = lam_vector(result.lam), partners(result.y)
    for i in torch.nonzero((j != torch.arange(B)) & (lam < 0.95)).flatten().tolist():
        r, c = spots[j[i]].tolist()
        assert (result.x[i, :, r, c] == 10.0 + j[i]).all(), "the partner's blob is pasted"


def test_spectral_residual_saliency_peaks_at_an_odd_spot():
    from mixbench.methods.mask_mixing import saliency_peaks

    x = torch.zeros(2, 1, 40, 40)
    x[0, :, 30, 9] = 1.0
    x[1, :, 5:8, 20:23] = 1.0
    rows, cols = saliency_peaks(x)
    assert abs(rows[0] - 30) <= 2 and abs(cols[0] - 9) <= 2
    assert abs(rows[1] - 6) <= 2 and abs(cols[1] - 21) <= 2


@pytest.mark.parametrize("mode", MODES)
def test_smoothmix_mask_is_soft_and_peaks_at_one_place(mode):
    torch.manual_seed(19)
    x, y = batch()
    result = build("smoothmix", lam_mode=mode, alpha=1.0).mix_batch(x, y)
    weight, j = kept_weight(result, x)
    mixed = j != torch.arange(B)
    w = weight[mixed, 0]
    assert ((w > 0.01) & (w < 0.99)).any(), "edges are soft, not a hard box"
    assert (w.amin((1, 2)) < 0.9).all(), "some pixel is mostly the partner's"


# --- one epoch through Hydra and the trainer ------------------------------------------------

@pytest.mark.parametrize("name,extra", [("mixup_cutmix", ["method.lam_mode=sample"]),
                                        ("fmix", []), ("gridmix", []), ("smoothmix", []),
                                        ("resizemix", ["method.lam_mode=sample"]),
                                        ("saliencymix", ["method.label_lam=independent",
                                                         "method.mix_until=0.5"])])
def test_new_mixers_train_one_epoch_on_digits(cfg_factory, tmp_path, name, extra):
    from mixbench.app.train import train

    results = train(cfg_factory(f"+method={name}", "trainer.batch_size=32", *extra), tmp_path)
    assert results["status"] == "completed"
    assert results["config"]["method"]["name"] == name
    assert 0.0 <= results["test"]["top1"] <= 1.0


def test_mix_pairs_is_the_one_pairwise_mix():
    x = torch.randn(4, 3, 5, 5)
    before = x.clone()
    perm = torch.tensor([2, 0, 3, 1])
    partner = x[perm]
    lam = torch.tensor([0.0, 0.25, 0.5, 1.0])
    mask = torch.rand(4, 1, 5, 5)
    torch.testing.assert_close(mix_pairs(x, perm, 0.3), 0.3 * x + 0.7 * partner)
    torch.testing.assert_close(mix_pairs(x, perm, lam), lam.view(4, 1, 1, 1) * x +
                               (1 - lam.view(4, 1, 1, 1)) * partner)
    torch.testing.assert_close(mix_pairs(x, perm, mask, of="partner"),
                               (1 - mask) * x + mask * partner)
    # weights of exactly 1 and 0 keep one of the two values exactly
    by_sample = mix_pairs(x, perm, lam)
    assert torch.equal(by_sample[0], partner[0]) and torch.equal(by_sample[3], x[3])
    assert torch.equal(x, before)  # inputs are never modified
    hidden = torch.randn(4, 7)  # a hidden state of another rank, per-sample weights
    torch.testing.assert_close(mix_pairs(hidden, perm, lam),
                               lam[:, None] * hidden + (1 - lam[:, None]) * hidden[perm])
    with pytest.raises(ValueError, match="of must be"):
        mix_pairs(x, perm, 0.5, of="both")


def test_mix_pairs_passes_gradients_to_the_inputs_and_a_learned_mask():
    x = torch.randn(4, 1, 3, 3, requires_grad=True)
    share = torch.full((4, 1, 3, 3), 0.25, requires_grad=True)
    perm = torch.tensor([1, 0, 3, 2])
    mix_pairs(x, perm, share, of="partner").sum().backward()
    torch.testing.assert_close(share.grad, (x[perm] - x).detach())
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # 0.75 own + 0.25 as a partner
    with torch.no_grad():  # no graph needed: written into the partner copy
        assert not mix_pairs(x, perm, share, of="partner").requires_grad


# --- d-Mixup ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("alpha,prob", [(1.0, 1.0), (0.4, 0.5)])
def test_dmixup_with_d_1_is_mixup_under_the_same_draws(mode, alpha, prob):
    x, y = batch()
    options = {"alpha": alpha, "prob": prob, "lam_mode": mode}
    for seed in range(5):
        torch.manual_seed(seed)
        ours = build("dmixup", d=1, **options).mix_batch(x, y)
        torch.manual_seed(seed)
        mixup = build("mixup", **options).mix_batch(x, y)
        torch.testing.assert_close(ours.x, mixup.x)
        torch.testing.assert_close(ours.y, mixup.y)
        torch.testing.assert_close(lam_vector(ours.lam), lam_vector(mixup.lam))


@pytest.mark.parametrize("mode", MODES)
def test_dmixup_targets_are_distributions_over_d_plus_1_samples(mode):
    x, y = batch()
    torch.manual_seed(0)
    result = build("dmixup", d=3, alpha=0.5, lam_mode=mode).mix_batch(x, y)
    assert torch.allclose(result.y.sum(1), torch.ones(B)) and (result.y >= 0).all()
    assert ((result.y > 0).sum(1) <= 4).all()  # itself and three partners at most
    # each image is constant (value i): its mix is Σ_k w_k·k, the targets' mean label
    labels = torch.arange(B, dtype=torch.float32)
    torch.testing.assert_close(result.x[:, 0, 0, 0], result.y @ labels)
    assert torch.all(result.y[torch.arange(B), torch.arange(B)] >= lam_vector(result.lam) - 1e-6)


def test_dmixup_weights_have_the_dirichlet_mean_and_variance():
    from mixbench.methods.sample_mixing import DirichletSampler

    torch.manual_seed(0)
    d, alpha, n = 3, 0.5, 20_000
    table = DirichletSampler(alpha, d + 1).weight_table(n)
    assert table.shape == (d + 1, n) and torch.allclose(table.sum(0), torch.ones(n))
    k = d + 1  # Dirichlet(α·1): mean 1/k, variance (1/k)(1 - 1/k)/(kα + 1)
    assert table.mean(1) == pytest.approx([1 / k] * k, abs=0.005)
    variance = (1 / k) * (1 - 1 / k) / (k * alpha + 1)
    assert table.var(1) == pytest.approx([variance] * k, rel=0.05)


def test_dmixup_options_are_checked_and_it_never_waits_for_the_device():
    with pytest.raises(ConfigError, match="method.d"):
        build("dmixup", d=0)
    with pytest.raises(ConfigError, match="label_lam"):
        build("dmixup", label_lam="independent")
    for mode in MODES:
        method = build("dmixup", d=2, prob=0.5, lam_mode=mode)
        x = torch.empty(B, C, H, W, device="meta")
        y = torch.empty(B, B, device="meta")
        method.mix_batch(x, y)  # warm-up: the sampler's table on the device
        with HostToDeviceCopies() as copies:
            method.mix_batch(x, y)
        assert not copies.found, copies.found


def test_a_method_wrapper_forwards_every_hook_to_the_method_it_wraps():
    """Distillation's and DSA's wrappers reach the wrapped method on every call the trainer and
    the protocols make (start_step was once lost), and save its state."""
    from mixbench.continual.kd import Distilled
    from mixbench.distill.smooth import AugmentedStep
    from mixbench.methods.base import Method, MethodWrapper

    class Recorder(Method):
        tasks = ("classification",)

        def __init__(self):
            super().__init__(num_classes=3)
            self.calls = []

        def start_epoch(self, epoch, epochs):
            self.calls.append(("start_epoch", epoch, epochs))

        def start_step(self, old_classes):
            self.calls.append(("start_step", old_classes))

        def setup(self, data, train_loader):
            self.calls.append(("setup", data, train_loader))

        def state_dict(self):
            return {"seen": len(self.calls)}

        def load_state_dict(self, state):
            self.calls.append(("load", state))

    teacher = torch.nn.Linear(4, 3)
    for make in (lambda m: Distilled(m, teacher, old_classes=1, temperature=2.0),
                 lambda m: AugmentedStep(m), MethodWrapper):
        inner = Recorder()
        wrapped = make(inner)
        wrapped.start_epoch(2, 10)
        wrapped.start_step(1)
        wrapped.setup("data", "loader")
        assert wrapped.state_dict() == {"seen": 3}
        wrapped.load_state_dict({"seen": 3})
        assert inner.calls == [("start_epoch", 2, 10), ("start_step", 1),
                               ("setup", "data", "loader"), ("load", {"seen": 3})]
        assert wrapped.tasks == ("classification",) and wrapped.progress == 0.2
