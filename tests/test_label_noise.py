"""dataset.label_noise: exact per-class fractions, determinism, clean test set, the record."""
import json

import pytest
import torch

from mixbench.data.label_noise import LABEL_NOISE_NAME, check_label_noise, corrupt_labels
from mixbench.engine.run import train
from mixbench.errors import ConfigError
from mixbench.components import DATASETS

LABELS = torch.arange(10).repeat_interleave(50)  # 10 classes × 50 samples


@pytest.mark.parametrize("kind", ["fixed_flip", "uniform"])
def test_flips_the_requested_fraction_of_every_class(kind):
    noisy, index = corrupt_labels(LABELS, 10, p=0.3, kind=kind, seed=0)
    changed = noisy != LABELS
    assert changed.sum() == len(index) == 150
    assert torch.equal(torch.nonzero(changed).flatten(), index)
    for c in range(10):
        assert changed[LABELS == c].sum() == 15  # exactly p of each class
    if kind == "fixed_flip":
        assert torch.equal(noisy[index], (LABELS[index] + 1) % 10)
    else:  # other classes, and more than one of them
        assert len(set(((noisy[index] - LABELS[index]) % 10).tolist())) > 3


def test_deterministic_under_the_seed():
    a = corrupt_labels(LABELS, 10, p=0.1, kind="uniform", seed=3)
    b = corrupt_labels(LABELS, 10, p=0.1, kind="uniform", seed=3)
    c = corrupt_labels(LABELS, 10, p=0.1, kind="uniform", seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def digits(**noise):
    return DATASETS.build({"name": "digits", "label_noise": noise or None})


def test_digits_noise_covers_train_and_val_not_test():
    clean, noisy = digits(), digits(p=0.5, kind="fixed_flip", seed=0)
    assert clean.label_noise is None
    for split in ("train", "val", "test"):  # the same images in every split
        assert torch.equal(getattr(clean, split).x, getattr(noisy, split).x)
    assert torch.equal(clean.test.y, noisy.test.y)
    for split in ("train", "val"):
        flipped = (getattr(clean, split).y != getattr(noisy, split).y).float().mean().item()
        assert flipped == pytest.approx(0.5, abs=0.1)  # val holds ~180 images
    record = noisy.label_noise
    pool = len(clean.train) + len(clean.val)
    assert record["pool_size"] == pool and record["flipped"] == len(record["index"])
    assert record["flipped"] == pytest.approx(0.5 * pool, abs=10)
    assert record["noisy"] == [(c + 1) % 10 for c in record["clean"]]
    # p = 0 changes nothing
    assert torch.equal(digits(p=0.0, kind="uniform", seed=0).train.y, clean.train.y)


@pytest.mark.parametrize("noise,key", [({"p": 1.0}, "label_noise.p"),
                                       ({"p": 0.2, "kind": "pairs"}, "label_noise.kind"),
                                       ({"p": 0.2, "sed": 1}, "unknown keys"),
                                       ({"p": 0.2, "seed": "a"}, "label_noise.seed")])
def test_bad_settings_name_the_key(noise, key):
    with pytest.raises(ConfigError, match=key):
        check_label_noise(noise)


def test_run_records_the_noisy_labels(cfg_factory, tmp_path):
    cfg = cfg_factory("dataset.label_noise.p=0.3", "dataset.label_noise.kind=fixed_flip")
    results = train(cfg, tmp_path)
    assert results["status"] == "completed"
    record = json.loads((tmp_path / LABEL_NOISE_NAME).read_text())
    assert record["p"] == 0.3 and record["kind"] == "fixed_flip"
    assert record["flipped"] == len(record["index"]) > 0
    assert results["config"]["dataset"]["label_noise"]["p"] == 0.3


def test_ts_limits_preset_sweeps_methods_and_noise_levels():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ts_limits"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["+method"] == "erm,mixup,dmixup"
    assert [float(p) for p in params["dataset.label_noise.p"].split(",")] == [0, 0.1, 0.3, 0.5]
    assert cfg.dataset.name == "fashion_mnist" and cfg.dataset.label_noise.kind == "uniform"
    assert cfg.eval.n_bins == 15 and cfg.optimizer.lr == 1e-3 and cfg.trainer.batch_size == 500
