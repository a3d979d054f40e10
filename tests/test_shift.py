"""Test-time shift: the CIFAR-10-C corruptions, the CIFAR-C reader on small files written here in
the published layout, and the orders of the test streams."""
import io

import kornia
import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

from mixbench.errors import ConfigError, DatasetError, DatasetNotFoundError
from mixbench.shift import (CORRUPTIONS, PARAMETERS, continual, corrupt, corrupt_with,
                            dirichlet_chunks, dirichlet_order, iid_order, mixed, read_cifar_c)
from mixbench.shift.corruptions import _displace_locally

# these use no randomness: the seed must not matter
SEEDLESS = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}


def smooth_images(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Photo-like uint8 images: smooth colour fields with a little texture (random pixels
    would make every blur look like a huge change)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, 6, 6, generator=g)
    x = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    return (x.clamp(0, 1) * 255).to(torch.uint8)


def mean_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


RGB = smooth_images(3, 3, 32)
GREY = smooth_images(2, 1, 28, seed=1)


# --- corruptions ------------------------------------------------------------------------------
@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_keeps_shape_changes_the_image_and_repeats_under_its_seed(name, severity):
    out = corrupt(RGB, name, severity, seed=7)
    assert out.shape == RGB.shape and out.dtype == torch.uint8
    assert mean_change(out, RGB) > 0.5
    assert torch.equal(out, corrupt(RGB, name, severity, seed=7))
    other_seed = corrupt(RGB, name, severity, seed=8)
    assert torch.equal(out, other_seed) == (name in SEEDLESS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_grey_images_are_corrupted_too(name):
    out = corrupt(GREY, name, 3, seed=0)
    assert out.shape == GREY.shape and out.dtype == torch.uint8
    assert mean_change(out, GREY) > 0.5
    assert torch.equal(out, corrupt(GREY, name, 3, seed=0))


# elastic_transform: severity 1 is all affine jitter (8% of the size), severity 5 has 3% plus a
# small elastic field, so severity 1 can move pixels further. frost: severity 5 dims the image
# while it adds more frost, so on a bright image it can change less than severity 1.
NOT_MONOTONE_BY_CONSTRUCTION = {"elastic_transform", "frost"}


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n not in NOT_MONOTONE_BY_CONSTRUCTION])
def test_severity_5_changes_the_image_more_than_severity_1(name):
    mild, severe = (corrupt(RGB, name, severity, seed=0) for severity in (1, 5))
    assert mean_change(severe, RGB) > mean_change(mild, RGB)


@pytest.mark.parametrize("name,measure,expected", [
    ("gaussian_noise", "std", 0.10 * 255),  # σ = 0.10 at severity 5
    ("shot_noise", "std", np.sqrt(0.5 * 50) / 50 * 255),  # Poisson(0.5·50)/50 at severity 5
    ("impulse_noise", "flipped", 0.07),  # 7% of the values to 0 or 255 at severity 5
])
def test_noise_has_the_strength_of_the_cifar_table(name, measure, expected):
    grey_card = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)  # no clipping at 0 or 255
    out = corrupt(grey_card, name, 5, seed=0).float()
    if measure == "std":
        found = (out - 128).std().item()
    else:
        found = ((out == 0) | (out == 255)).float().mean().item()
    assert found == pytest.approx(expected, rel=0.1)


def test_brightness_is_the_hsv_round_trip_with_value_raised():
    hsv = kornia.color.rgb_to_hsv(RGB.float() / 255)
    hsv[:, 2] = (hsv[:, 2] + PARAMETERS["brightness"][4][0]).clamp(0, 1)
    expected = torch.floor(kornia.color.hsv_to_rgb(hsv).clamp(0, 1) * 255)
    assert (corrupt(RGB, "brightness", 5, seed=0).float() - expected).abs().max() <= 1


def reference_zoom_blur(image: np.ndarray, stop: float, step: float) -> np.ndarray:
    """The reference's zoom blur on one H×W×C image, with scipy's zoom."""
    x = image / 255.0
    height = x.shape[0]
    total = np.zeros_like(x)
    for factor in np.arange(1, stop, step):
        crop = int(np.ceil(height / factor))
        top = (height - crop) // 2
        zoomed = scipy.ndimage.zoom(x[top:top + crop, top:top + crop], (factor, factor, 1),
                                    order=1)
        trim = (zoomed.shape[0] - height) // 2
        total += zoomed[trim:trim + height, trim:trim + height]
    return np.uint8(np.clip((x + total) / (len(np.arange(1, stop, step)) + 1), 0, 1) * 255)


def test_zoom_blur_is_the_reference_formula():
    stop, step = PARAMETERS["zoom_blur"][4]
    ours = corrupt(RGB, "zoom_blur", 5, seed=0).permute(0, 2, 3, 1).numpy().astype(int)
    expected = np.stack([reference_zoom_blur(im, stop, step)
                         for im in RGB.permute(0, 2, 3, 1).numpy()]).astype(int)
    assert np.abs(ours - expected).max() <= 1 and (ours != expected).mean() < 0.01


@pytest.mark.parametrize("severity", [1, 5])
def test_pixelate_is_pillows_box_resize_down_and_up(severity):
    (factor,) = PARAMETERS["pixelate"][severity - 1]
    expected = []
    for im in RGB.permute(0, 2, 3, 1).numpy():
        small = Image.fromarray(im).resize((int(32 * factor),) * 2, Image.BOX)
        expected.append(np.asarray(small.resize((32, 32), Image.BOX)))
    ours = corrupt(RGB, "pixelate", severity, seed=0).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(ours, np.stack(expected))


def test_jpeg_compression_is_close_to_pillows_at_the_same_quality():
    (quality,) = PARAMETERS["jpeg_compression"][4]
    expected = []
    for im in RGB.permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, "JPEG", quality=quality)
        expected.append(np.asarray(Image.open(buffer)))
    ours = corrupt(RGB, "jpeg_compression", 5, seed=0).permute(0, 2, 3, 1)
    assert mean_change(ours, torch.from_numpy(np.stack(expected))) < 1


def test_glass_blur_moves_pixels_as_the_reference_numpy_views_do():
    # x[h, w], x[h', w'] = x[h', w'], x[h, w] on RGB views copies the up-left neighbour into
    # (h, w) and leaves the neighbour alone: rows and columns 0-1 are never written
    x = smooth_images(2, 3, 32, seed=3).float()
    out = _displace_locally(x, 1, torch.Generator().manual_seed(0))
    assert torch.equal(out[..., :2, :], x[..., :2, :]) and torch.equal(out[..., :2], x[..., :2])
    candidates = torch.stack([x[..., 2 + dy:32 + dy, 2 + dx:32 + dx]
                              for dy in (-1, 0) for dx in (-1, 0)])
    from_a_neighbour = (candidates == out[..., 2:, 2:]).all(dim=2).any(dim=0)  # all channels
    assert from_a_neighbour.all()
    assert not torch.equal(out, x)


def test_corrupt_with_applies_an_explicit_row():
    assert torch.equal(corrupt_with(RGB, "contrast", PARAMETERS["contrast"][4], seed=0),
                       corrupt(RGB, "contrast", 5, seed=0))
    flat = corrupt_with(RGB, "contrast", (0.0,), seed=0)  # no contrast left: each channel flat
    assert (flat.amax(dim=(2, 3)) == flat.amin(dim=(2, 3))).all()


@pytest.mark.parametrize("name,severity,match", [
    ("gaussian_blur", 1, "glass_blur"),  # a validation corruption: not one of the 15
    ("fog", 0, r"\(1, 2, 3, 4, 5\)"),
    ("fog", 6, r"\(1, 2, 3, 4, 5\)"),
    ("fog", True, r"\(1, 2, 3, 4, 5\)"),
])
def test_unknown_name_or_severity_is_a_config_error_listing_the_choices(name, severity, match):
    with pytest.raises(ConfigError, match=match):
        corrupt(RGB, name, severity, seed=0)


@pytest.mark.parametrize("images", [RGB.float(), RGB[0], smooth_images(1, 2, 32)])
def test_corruptions_take_uint8_batches_of_grey_or_rgb_images(images):
    with pytest.raises(ValueError, match="uint8 images B×C×H×W"):
        corrupt(images, "fog", 1, seed=0)


# --- the CIFAR-C reader -----------------------------------------------------------------------
PER_SEVERITY = 4  # the published files hold 10,000; the reader takes len // 5 per severity


def write_cifar_c(root, folder="CIFAR-10-C", name="gaussian_noise", images=None, labels=None):
    """A CIFAR-C folder in the published layout; image value = 50·(severity-1) + 10·channel + i,
    so a test can see which rows and which channel it got."""
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    if images is None:
        severity, index = np.divmod(np.arange(5 * PER_SEVERITY), PER_SEVERITY)
        value = 50 * severity[:, None] + 10 * np.arange(3)[None] + index[:, None]
        images = np.broadcast_to(value[:, None, None, :], (5 * PER_SEVERITY, 32, 32, 3))
        images = images.astype(np.uint8)
    if labels is None:
        labels = np.tile(np.arange(PER_SEVERITY) + 3, 5).astype(np.uint8)  # published as uint8
    np.save(path / f"{name}.npy", images)
    np.save(path / "labels.npy", labels)


@pytest.mark.parametrize("variant,folder", [("cifar10", "CIFAR-10-C"), ("cifar100", "CIFAR-100-C")])
def test_read_cifar_c_takes_one_severity_as_nchw_uint8_and_int64_labels(tmp_path, variant, folder):
    write_cifar_c(tmp_path, folder)
    split = read_cifar_c(tmp_path, variant, "gaussian_noise", 3)
    assert split.x.shape == (PER_SEVERITY, 3, 32, 32) and split.x.dtype == torch.uint8
    assert split.y.dtype == torch.int64 and split.y.tolist() == [3, 4, 5, 6]
    expected = [[100 + 10 * c + i for c in range(3)] for i in range(PER_SEVERITY)]
    assert split.x[:, :, 5, 7].tolist() == expected
    assert (split.x == split.x[:, :, :1, :1]).all()  # whole planes, not a scrambled transpose


def test_read_cifar_c_missing_file_says_which_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="zenodo") as err:
        read_cifar_c(tmp_path, "cifar10", "fog", 5)
    assert "CIFAR-10-C/fog.npy" in str(err.value)


@pytest.mark.parametrize("images,labels,match", [
    (np.zeros((20, 32, 32, 1), np.uint8), None, "N×32×32×3"),
    (np.zeros((20, 32, 32, 3), np.float32), None, "N×32×32×3"),
    (np.zeros((21, 32, 32, 3), np.uint8), np.zeros(21, np.uint8), "five equal severities"),
    (None, np.zeros(19, np.uint8), r"labels.npy has shape \(19,\)"),
])
def test_read_cifar_c_rejects_files_of_the_wrong_shape(tmp_path, images, labels, match):
    write_cifar_c(tmp_path, images=images, labels=labels)
    with pytest.raises(DatasetError, match=match):
        read_cifar_c(tmp_path, "cifar10", "gaussian_noise", 1)


@pytest.mark.parametrize("variant,name,severity", [
    ("cifar10c", "fog", 1), ("cifar10", "rain", 1), ("cifar10", "fog", 6)])
def test_read_cifar_c_rejects_unknown_choices(tmp_path, variant, name, severity):
    with pytest.raises(ConfigError):
        read_cifar_c(tmp_path, variant, name, severity)


# --- test streams -----------------------------------------------------------------------------
BALANCED = torch.arange(1000) % 10  # 10 classes × 100, interleaved


def mean_run_length(labels) -> float:
    labels = torch.as_tensor(labels)
    runs = 1 + int((labels[1:] != labels[:-1]).sum())
    return len(labels) / runs


def is_permutation(order: torch.Tensor, n: int) -> bool:
    return order.dtype == torch.int64 and torch.equal(order.sort().values, torch.arange(n))


def test_iid_order_is_a_permutation_fixed_by_its_seed():
    order = iid_order(BALANCED, seed=0)
    assert is_permutation(order, 1000)
    assert torch.equal(order, iid_order(BALANCED, seed=0))
    assert not torch.equal(order, iid_order(BALANCED, seed=1))
    assert mean_run_length(BALANCED[order]) < 1.3  # ~1/(1 - 1/10) for a shuffle


@pytest.mark.parametrize("delta", [0.1, 0.01])
def test_dirichlet_order_is_a_permutation_cut_in_chunks_of_at_least_ten(delta):
    chunks = dirichlet_chunks(BALANCED, delta, seed=0)
    order = dirichlet_order(BALANCED, delta, seed=0)
    assert len(chunks) == 10 and min(len(c) for c in chunks) >= 10
    assert torch.equal(torch.cat(chunks), order) and is_permutation(order, 1000)
    assert torch.equal(order, dirichlet_order(BALANCED, delta, seed=0))
    assert not torch.equal(order, dirichlet_order(BALANCED, delta, seed=1))
    for chunk in chunks:  # within a chunk, each class comes in one block
        labels = BALANCED[chunk]
        assert mean_run_length(labels) == len(labels) / len(labels.unique())


def test_dirichlet_order_is_label_correlated():
    correlated = mean_run_length(BALANCED[dirichlet_order(BALANCED, 0.1, seed=0)])
    shuffled = mean_run_length(BALANCED[iid_order(BALANCED, seed=0)])
    assert correlated > 10 * shuffled


def test_dirichlet_order_rejects_chunks_it_cannot_fill():
    with pytest.raises(ConfigError, match="min_chunk=10"):
        dirichlet_order(torch.arange(50) % 10, 0.1, seed=0)


def all_pairs(corruptions, n):
    return {(c, i) for c in corruptions for i in range(n)}


@pytest.mark.parametrize("delta", [None, 0.1])
def test_continual_runs_the_corruptions_one_after_another(delta):
    names = ("fog", "snow", "contrast")
    stream = continual(BALANCED, names, seed=0, delta=delta)
    pairs = stream.pairs()
    assert len(pairs) == 3000 and set(pairs) == all_pairs(names, 1000)
    assert [c for c, _ in pairs[::1000]] == list(names)
    assert torch.equal(stream.domain, torch.arange(3).repeat_interleave(1000))
    blocks = stream.index.view(3, 1000)
    assert not torch.equal(blocks[0], blocks[1])  # each corruption in its own order
    assert torch.equal(stream.index, continual(BALANCED, names, seed=0, delta=delta).index)


@pytest.mark.parametrize("delta", [None, 0.1])
def test_mixed_shuffles_all_corruptions_together(delta):
    names = ("fog", "snow", "contrast")
    stream = mixed(BALANCED, names, seed=0, delta=delta)
    pairs = stream.pairs()
    assert len(pairs) == 3000 and set(pairs) == all_pairs(names, 1000)
    assert mean_run_length(stream.domain) < 2  # corruptions interleaved, not in blocks
    runs = mean_run_length(BALANCED[stream.index])
    assert runs > 10 if delta else runs < 1.3
    again = mixed(BALANCED, names, seed=0, delta=delta)
    assert torch.equal(stream.index, again.index) and torch.equal(stream.domain, again.domain)
    assert not torch.equal(stream.index, mixed(BALANCED, names, seed=1, delta=delta).index)


def test_streams_reject_repeated_corruptions():
    with pytest.raises(ConfigError, match="without repeats"):
        continual(BALANCED, ["fog", "fog"], seed=0)


def test_a_run_evaluated_under_a_corruption_keeps_its_files(tmp_path):
    """tools/evaluate.py --shift: metrics on the corrupted test split go to shift.json;
    results.json and the checkpoint are not touched."""
    import json

    from conftest import FAST, make_cfg
    from mixbench.app.train import train
    from mixbench.shift.evaluate import SHIFT_NAME, evaluate_shift, parse_shift

    run = tmp_path / "run"
    clean = train(make_cfg(*FAST), run)
    before = {name: (run / name).read_bytes() for name in ("results.json", "last.pt")}
    noisy = evaluate_shift(run, "gaussian_noise", 5, device="cpu")
    again = evaluate_shift(run, "gaussian_noise", 5, device="cpu")
    evaluate_shift(run, "contrast", 3, device="cpu")
    assert noisy["test"] == again["test"]  # seeded
    assert noisy["test"]["top1"] < clean["test"]["top1"]
    saved = json.loads((run / SHIFT_NAME).read_text())
    assert sorted(saved) == ["contrast:3", "gaussian_noise:5"]
    assert saved["gaussian_noise:5"]["test"] == noisy["test"]
    assert {name: (run / name).read_bytes() for name in before} == before
    assert parse_shift("fog:2") == ("fog", 2)
    with pytest.raises(ConfigError, match="NAME:SEVERITY"):
        parse_shift("fog")
    for bad in ("fgo:2", "fog:6"):
        with pytest.raises(ConfigError, match="the corruptions are gaussian_noise"):
            parse_shift(bad)
