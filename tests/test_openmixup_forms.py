"""Mixers in OpenMixup's form (the CIFAR-100 preset's defaults) against transcriptions of
OpenMixup's own mask code, and the method YAMLs' defaults against OpenMixup's CIFAR configs."""
import math

import pytest
import torch

from mixbench.components import METHODS
from mixbench.methods.mask_mixing import grid_holes, saliency_peaks

B = 8


def build(name, **kwargs):
    return METHODS.build({"name": name, **kwargs}, num_classes=B)


# --- smoothmix -------------------------------------------------------------------------------
def openmixup_smooth_kernel(h, roll_rows, roll_cols, sigma):
    """OpenMixup's smoothmix.py ``gaussian_kernel`` (its blob, the partner's weight), on the
    CPU: a 2h grid of coordinates rolled, cropped to its middle h×h, Gaussian around the
    grid's centre."""
    s = 2 * h
    cols = torch.arange(s).repeat(s).view(s, s)
    grid = torch.stack([cols, cols.t()], dim=-1)
    grid = torch.roll(torch.roll(grid, roll_rows, 0), roll_cols, 1)
    grid = grid[s // 4: s - s // 4, s // 4: s - s // 4]
    return torch.exp(-((grid - (s - 1) / 2) ** 2).sum(-1) / (2 * sigma ** 2))


def test_smoothmix_uniform_blob_is_openmixups_kernel(monkeypatch):
    # OpenMixup rolls by u - h/2 with u uniform in 0..h-1: the blob's centre is the pixel
    # corner u. Ours with centre (u_r, u_c) and the same σ must be that kernel exactly.
    h = 16
    method = build("smoothmix")
    for u_r, u_c, sigma in [(0, 15, 4.0), (5, 9, 6.3), (15, 0, 7.9)]:
        monkeypatch.setattr(method, "blob", lambda n, height, width, lam, device: (
            torch.full((n,), -1 / (2 * sigma ** 2)), torch.full((n, 1), u_r),
            torch.full((n, 1), u_c)))
        mask, lam = method.batch_mask(0.5, h, h)
        expected = openmixup_smooth_kernel(h, u_r - h // 2, u_c - h // 2, sigma)
        torch.testing.assert_close(1 - mask, expected, atol=1e-6, rtol=0)
        assert lam == pytest.approx(1 - expected.mean().item(), abs=1e-6)


def test_smoothmix_uniform_sigma_ignores_alpha_and_stays_in_a_quarter_to_a_half():
    # σ = (0.25 + U/4)·H: log of the partner's weight along a row through the centre is
    # -d²/2σ², so σ is recoverable; it must not depend on α.
    h = w = 32
    for alpha in (0.2, 5.0):
        torch.manual_seed(3)
        method = build("smoothmix", alpha=alpha)
        scale, cy, cx = method.blob(4000, h, w, torch.full((4000,), 0.5), "cpu")
        sigma = (-1 / (2 * scale)).sqrt() / h
        assert sigma.min() >= 0.25 and sigma.max() < 0.5
        assert abs(sigma.mean().item() - 0.375) < 0.01
        assert cy.min() == 0 and cy.max() == h - 1 and cx.max() == w - 1
    area = build("smoothmix", sigma_law="area")  # ours: 2πσ² = (1-λ)HW
    scale, _, _ = area.blob(3, h, w, torch.tensor([0.2, 0.5, 0.9]), "cpu")
    torch.testing.assert_close(2 * math.pi * (-1 / (2 * scale)),
                               torch.tensor([0.8, 0.5, 0.1]) * h * w)


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_smoothmix_pasted_label_weight_swaps_the_shares(mode):
    x = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, 12, 12).clone()
    y = torch.eye(B)
    results = {}
    for label_weight in ("pasted", "kept"):
        torch.manual_seed(5)
        results[label_weight] = build("smoothmix", label_weight=label_weight,
                                      lam_mode=mode).mix_batch(x, y)
    pasted, kept = results["pasted"], results["kept"]
    assert torch.equal(pasted.x, kept.x)  # the same images; only the labels differ
    lam = torch.as_tensor(pasted.lam).expand(B)
    mixed = kept.y.diagonal() < 1  # (a sample paired with itself keeps its label)
    torch.testing.assert_close(pasted.y.diagonal()[mixed], 1 - lam[mixed])
    torch.testing.assert_close(kept.y.diagonal()[mixed], lam[mixed])
    torch.testing.assert_close(pasted.y.sum(1), torch.ones(B))


def test_smoothmix_pasted_labels_leave_unmixed_samples_alone():
    torch.manual_seed(9)
    x, y = torch.rand(B, 3, 8, 8), torch.eye(B)
    result = build("smoothmix", prob=0.5, lam_mode="sample").mix_batch(x, y)
    kept = result.lam == 1.0
    assert 0 < kept.sum() < B and torch.equal(result.y[kept], y[kept])


# --- gridmix ---------------------------------------------------------------------------------
def openmixup_grid(lam, size, cut_area_ratio, cut_aspect_ratio, n_holes, hole_aspect_ratio,
                   cx, cy):
    """OpenMixup's gridmix.py ``rand_grid`` with its random draws passed in (square image)."""
    cut_area = int(size * size * cut_area_ratio)
    cut_w = int(math.sqrt(cut_area / cut_aspect_ratio))
    cut_h = int(cut_w * cut_aspect_ratio)
    xc1, yc1 = int((size - cut_w) * cx), int((size - cut_h) * cy)
    assert 1 <= n_holes <= cut_w // 2
    patch_w = math.ceil(cut_w / n_holes)
    patch_h = int(patch_w * hole_aspect_ratio)
    ny = math.ceil(cut_h / patch_h)
    ratio = math.sqrt(1 - lam)
    hole_w = min(max(int(patch_w * ratio), 1), patch_w - 1)
    hole_h = min(max(int(patch_h * ratio), 1), patch_h - 1)
    mask = torch.zeros(size, size)
    for i in range(n_holes + 1):
        for j in range(ny + 1):
            x1, y1 = min(patch_w * i, cut_w), min(patch_h * j, cut_h)
            x2, y2 = min(x1 + hole_w, cut_w), min(y1 + hole_h, cut_h)
            mask[yc1 + y1: yc1 + y2, xc1 + x1: xc1 + x2] = 1.0  # (negative starts wrap)
    return mask


def test_gridmix_holes_are_openmixups_mask():
    # OpenMixup's defaults for CIFAR (n_holes 2..6, hole aspect 1, cut area 0.5..1, cut
    # aspect 0.5..2): regions taller than the image start at a negative row and wrap, as
    # OpenMixup's slices do; every case must agree pixel for pixel.
    f64 = {"dtype": torch.float64}
    wrapped = 0
    for seed in range(300):
        lam = torch.rand(1, generator=torch.Generator().manual_seed(seed + 999))
        torch.manual_seed(seed)
        ours = grid_holes(lam, 32, 32, (2, 6), (1.0, 1.0), (0.5, 1.0), (0.5, 2.0))[0]
        torch.manual_seed(seed)  # the same draws, in grid_holes' order
        n = int(torch.randint(2, 7, (1,)))
        hole_aspect = torch.rand(1, **f64).item() * 0 + 1.0
        area = torch.rand(1, **f64).item() * 0.5 + 0.5
        aspect = torch.rand(1, **f64).item() * 1.5 + 0.5
        cx, cy = torch.rand(1, **f64).item(), torch.rand(1, **f64).item()
        wrapped += int(math.sqrt(int(1024 * area) / aspect)) * aspect >= 33
        expected = openmixup_grid(lam.item(), 32, area, aspect, n, hole_aspect, cx, cy)
        assert torch.equal(ours, expected), seed
    assert wrapped > 10


def test_gridmix_holes_lambda_law():
    # the hole's side is ⌊patch·√(1-λ)⌋: a larger λ never pastes more
    torch.manual_seed(2)
    lam = torch.tensor([0.1, 0.5, 0.9]).repeat_interleave(2000)
    pasted = grid_holes(lam, 32, 32, (2, 6), (1.0, 1.0), (0.5, 1.0), (0.5, 2.0)).mean((1, 2))
    means = pasted.view(3, -1).mean(1)
    assert means[0] > means[1] > means[2] > 0
    method = build("gridmix", lam_mode="sample")  # λ = 1 (not mixed): nothing pasted
    assert torch.equal(method.make_mask(torch.ones(3), 32, 32), torch.ones(3, 32, 32))


# --- saliencymix -----------------------------------------------------------------------------
def test_saliencymix_clipped_batch_box_sits_on_the_first_partners_peak(monkeypatch):
    from mixbench.methods.sample_mixing import SampleMixer

    monkeypatch.setattr(SampleMixer, "sample_lam", lambda self, b, device="cpu": 0.75)
    x = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).repeat(1, 3, 32, 32) / 100
    for i in range(B):
        x[i, :, 2 + 3 * i, 30 - 3 * i] = 5.0 + i  # one bright pixel, elsewhere per image
    y = torch.eye(B)
    torch.manual_seed(4)
    perm = torch.randperm(B)
    torch.manual_seed(4)
    result = build("saliencymix").mix_batch(x, y)
    rows, cols = saliency_peaks(x[perm[:1]])
    r, c = rows.item(), cols.item()
    # cut = ⌊32·√0.25⌋ = 16: the box [r-8, r+8) × [c-8, c+8), clipped to the image
    expected_keep = torch.ones(32, 32)
    expected_keep[max(r - 8, 0):min(r + 8, 32), max(c - 8, 0):min(c + 8, 32)] = 0
    pasted = (result.x != x).any(1)
    self_paired = perm == torch.arange(B)
    assert (pasted[~self_paired] == (expected_keep == 0)).all()  # one box for every sample
    lam = 1 - (expected_keep == 0).float().mean()
    torch.testing.assert_close(result.lam, lam.expand(B))


# --- automix / samix -------------------------------------------------------------------------
def test_adjust_share_rescales_each_mask_to_a_mean_own_share_of_lambda():
    from mixbench.methods.policy.automix import adjust_share

    share = torch.tensor([[0.2, 0.4], [0.8, 0.6], [0.5, 0.5]]).view(3, 1, 1, 2)
    out = adjust_share(share, 0.5)
    # own 0.8, 0.6 (mean 0.7 > λ): own · 0.5/0.7; own 0.2, 0.4 (mean 0.3 < λ): the partner's
    # 0.8, 0.6 · 0.5/0.7; mean exactly λ: untouched
    expected = torch.tensor([[1 - 0.8 * 5 / 7, 1 - 0.6 * 5 / 7], [0.8 * 5 / 7, 0.6 * 5 / 7],
                             [0.5, 0.5]]).view(3, 1, 1, 2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close((1 - out).mean((1, 2, 3)), torch.full((3,), 0.5))


@pytest.mark.parametrize("name", ["automix", "samix"])
@pytest.mark.parametrize("target", ["mix_block", "classifier"])
def test_mask_adjust_moves_the_classifiers_mask_to_the_chosen_lambda(name, target,
                                                                     monkeypatch):
    from mixbench.components import BACKBONES
    from mixbench.losses import CrossEntropy
    from mixbench.methods.policy import automix as module

    shares = []
    real_mix_pairs = module.mix_pairs
    monkeypatch.setattr(module, "mix_pairs", lambda x, perm, share, of: shares.append(
        share.detach()) or real_mix_pairs(x, perm, share, of=of))
    method = METHODS.build({"name": name, "mask_adjust": 1.0, "mask_adjust_lam": target},
                           num_classes=5)
    monkeypatch.setattr(method._beta, "sample", lambda shape: torch.tensor([0.3, 0.6]))
    model = BACKBONES.build({"name": "small_cnn", "width": 8}, num_classes=5, in_channels=1)
    method.step(model, (torch.randn(B, 1, 16, 16), torch.arange(B) % 5), CrossEntropy())
    classifier_share = shares[-1]  # the Mix Block's batch is mixed first
    own = (1 - classifier_share).mean((1, 2, 3))
    wanted = 0.3 if target == "mix_block" else 0.6  # (λ_g, λ_c) = (0.3, 0.6)
    torch.testing.assert_close(own, torch.full((B,), wanted), atol=1e-5, rtol=0)


def test_openmixup_defaults_compose_from_the_method_yamls():
    from conftest import make_cfg

    expected = {
        "mixup": {"alpha": 1.0}, "cutmix": {"alpha": 0.2}, "fmix": {"alpha": 0.2},
        "resizemix": {"alpha": 1.0, "scope": [0.1, 0.8]},
        "manifoldmix": {"alpha": 2.0},
        "smoothmix": {"alpha": 0.2, "sigma_law": "uniform", "label_weight": "pasted"},
        "gridmix": {"alpha": 0.2, "mask": "holes", "n_holes": [2, 6],
                    "hole_aspect_ratio": 1.0, "cut_area_ratio": [0.5, 1.0],
                    "cut_aspect_ratio": [0.5, 2.0]},
        "saliencymix": {"alpha": 0.2, "box": "clipped"},
        "attentivemix": {"alpha": 2.0, "top_k": None, "grid": 7, "top_cells_of": "own"},
        "automix": {"alpha": 2.0, "lam_concat": False, "mask_adjust": 0.0,
                    "lam_margin": 0.08, "upsample": "nearest"},
        "samix": {"alpha": 2.0, "eta": 1.0, "mask_adjust": 0.25, "lam_k": 0.25,
                  "lam_margin": 0.08, "upsample": "bilinear"},
    }
    for name, values in expected.items():
        cfg = make_cfg("experiment=cifar100_r18_openmixup", f"+method={name}")
        got = {key: cfg.method[key] for key in values}
        got = {k: (list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v)
               for k, v in got.items()}
        assert got == values, name
        assert cfg.trainer.batch_size == 100 and cfg.dataset.name == "cifar100"


FORM_KEYS = {"smoothmix": ["sigma_law", "label_weight"],
             "gridmix": ["mask", "n_holes", "hole_aspect_ratio", "cut_area_ratio",
                         "cut_aspect_ratio"],
             "saliencymix": ["box"], "attentivemix": ["top_cells_of", "top_k", "grid"],
             "automix": ["lam_concat", "mask_adjust", "mask_adjust_lam"],
             "samix": ["eta", "mask_adjust", "mask_adjust_lam"]}


@pytest.mark.parametrize("name", sorted(FORM_KEYS))
def test_class_defaults_of_the_forms_are_the_yamls(name):
    # building without the YAML (METHODS.build) gives OpenMixup's form too
    import inspect

    from omegaconf import OmegaConf

    from mixbench.config import CONFIG_DIR

    yaml = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "method" / f"{name}.yaml"))
    yaml = yaml.get("method", yaml)  # `# @package _global_` configs nest it (lr floor)
    signature = inspect.signature(METHODS.get(name))
    inherited = inspect.signature(METHODS.get("automix"))  # samix passes the rest on
    for key in FORM_KEYS[name]:
        parameter = signature.parameters.get(key) or inherited.parameters[key]
        default = parameter.default
        default = list(default) if isinstance(default, tuple) else default
        assert default == yaml[key], (name, key)


@pytest.mark.parametrize("lam_concat", [False, True])
def test_automix_sees_lambda_only_with_lam_concat(lam_concat):
    # OpenMixup's CIFAR Mix Block (lam_concat false) makes the same mask whatever λ; with
    # lam_concat (the paper's block, our earlier default) λ is a feature channel
    from mixbench.components import BACKBONES
    from mixbench.losses import CrossEntropy

    torch.manual_seed(3)
    method = METHODS.build({"name": "automix", "lam_concat": lam_concat}, num_classes=5)
    model = BACKBONES.build({"name": "small_cnn", "width": 8}, num_classes=5, in_channels=1)
    x = torch.randn(B, 1, 16, 16)
    method.step(model, (x, torch.arange(B) % 5), CrossEntropy())
    block = method.parts["mix_block"]
    perm = torch.randperm(B)
    with torch.no_grad():
        for conv in (block.query, block.value):  # larger weights: λ's effect shows
            conv.weight.normal_(std=1.0)
        same = torch.equal(method.masks(x, 0.2, perm), method.masks(x, 0.8, perm))
    assert same != lam_concat
