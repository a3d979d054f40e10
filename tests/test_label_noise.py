"""dataset.label_noise: exact per-class fractions, determinism, the test split only when asked,
the record, and metrics against both the noisy and the clean test labels."""
import json

import pytest
import torch

from mixbench.data.label_noise import LABEL_NOISE_NAME, check_label_noise, corrupt_labels
from mixbench.app.train import train
from mixbench.errors import ConfigError
from mixbench.components import DATASETS

LABELS = torch.arange(10).repeat_interleave(50)  # 10 classes × 50 samples


@pytest.mark.parametrize("kind", ["fixed_flip", "uniform", "class_map"])
def test_flips_the_requested_fraction_of_every_class(kind):
    noisy, index = corrupt_labels(LABELS, 10, p=0.3, kind=kind, seed=0)
    changed = noisy != LABELS
    assert changed.sum() == len(index) == 150
    assert torch.equal(torch.nonzero(changed).flatten(), index)
    for c in range(10):
        assert changed[LABELS == c].sum() == 15  # exactly p of each class
    if kind == "fixed_flip":
        assert torch.equal(noisy[index], (LABELS[index] + 1) % 10)
    elif kind == "class_map":  # every flipped sample of a class lands on the same other class
        targets = [set(noisy[index][LABELS[index] == c].tolist()) for c in range(10)]
        assert all(len(t) == 1 and c not in t for c, t in enumerate(targets))
        assert len(set.union(*targets)) > 1  # a drawn map, not one class for all
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
    assert noisy.test_clean_labels is None  # nothing to score against but the test labels
    record = noisy.label_noise
    assert "test" not in record
    pool = len(clean.train) + len(clean.val)
    train = record["train"]
    assert train["size"] == pool and train["flipped"] == len(train["index"])
    assert train["flipped"] == pytest.approx(0.5 * pool, abs=10)
    assert train["noisy"] == [(c + 1) % 10 for c in train["clean"]]
    # p = 0 changes nothing
    assert torch.equal(digits(p=0.0, kind="uniform", seed=0).train.y, clean.train.y)


def test_test_noise_alone_changes_only_the_test_split_under_its_own_seed():
    clean = digits()
    only_test = digits(p=0.3, kind="uniform", seed=0, train=False, test=True, test_seed=5)
    for split in ("train", "val"):
        assert torch.equal(getattr(clean, split).y, getattr(only_test, split).y)
    assert torch.equal(only_test.test_clean_labels, clean.test.y)
    flipped = only_test.test.y != clean.test.y
    assert flipped.float().mean().item() == pytest.approx(0.3, abs=0.02)  # exact per class
    record = only_test.label_noise
    assert "train" not in record and record["test"]["seed"] == 5
    # the record's positions are rows of scikit-learn's digits, and say what changed there
    from sklearn.datasets import load_digits
    published = load_digits().target
    assert [published[i] for i in record["test"]["index"]] == record["test"]["clean"]
    assert sorted(record["test"]["noisy"]) == sorted(only_test.test.y[flipped].tolist())
    # deterministic under test_seed; another test_seed flips other samples
    again = digits(p=0.3, kind="uniform", seed=0, train=False, test=True, test_seed=5)
    other = digits(p=0.3, kind="uniform", seed=0, train=False, test=True, test_seed=6)
    assert torch.equal(again.test.y, only_test.test.y)
    assert not torch.equal(other.test.y, only_test.test.y)
    # the training noise does not depend on whether the test split is noisy
    both = digits(p=0.3, kind="uniform", seed=0, test=True)
    assert torch.equal(both.train.y, digits(p=0.3, kind="uniform", seed=0).train.y)
    # neither split chosen: no noise at all
    assert digits(p=0.3, train=False).label_noise is None


@pytest.mark.parametrize("noise,key", [({"p": 1.0}, "label_noise.p"),
                                       ({"p": 0.2, "kind": "pairs"}, "label_noise.kind"),
                                       ({"p": 0.2, "sed": 1}, "unknown keys"),
                                       ({"p": 0.2, "seed": "a"}, "label_noise.seed"),
                                       ({"p": 0.2, "test_seed": 1.5}, "label_noise.test_seed"),
                                       ({"p": 0.2, "test": "yes"}, "label_noise.test")])
def test_bad_settings_name_the_key(noise, key):
    with pytest.raises(ConfigError, match=key):
        check_label_noise(noise)


def test_run_records_the_noisy_labels(cfg_factory, tmp_path):
    cfg = cfg_factory("dataset.label_noise.p=0.3", "dataset.label_noise.kind=fixed_flip")
    results = train(cfg, tmp_path)
    assert results["status"] == "completed"
    record = json.loads((tmp_path / LABEL_NOISE_NAME).read_text())
    assert record["p"] == 0.3 and record["kind"] == "fixed_flip"
    assert record["train"]["flipped"] == len(record["train"]["index"]) > 0
    assert results["config"]["dataset"]["label_noise"]["p"] == 0.3
    assert "test_clean" not in results  # clean test labels: one set of metrics


def test_noisy_test_labels_give_metrics_on_both_label_sets(cfg_factory, tmp_path):
    from mixbench.eval.calibration import calibration_metrics
    from mixbench.engine.load import load_run
    from mixbench.eval.evaluate import predict

    cfg = cfg_factory("dataset.label_noise.p=0.3", "dataset.label_noise.test=true")
    results = train(cfg, tmp_path)
    record = json.loads((tmp_path / LABEL_NOISE_NAME).read_text())
    assert record["test"]["flipped"] > 0 and record["train"]["flipped"] > 0
    # recompute both from the saved model: test on the noisy labels, test_clean on the clean
    run = load_run(tmp_path, "cpu")
    logits, noisy = predict(run.parts.model, run.loader("test"), torch.device("cpu"))
    clean = run.parts.data.test_clean_labels
    assert (noisy != clean).sum().item() == record["test"]["flipped"]
    for key, labels in (("test", noisy), ("test_clean", clean)):
        expected = calibration_metrics(logits, labels, cfg.eval.n_bins)
        assert results[key] == pytest.approx(expected, rel=1e-5), key
    scaled = calibration_metrics(logits / results["temperature"], clean, cfg.eval.n_bins)
    assert results["test_clean_ts"] == pytest.approx(scaled, rel=1e-5)
    assert results["test"]["top1"] < results["test_clean"]["top1"]  # 30% of labels are wrong


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
    noise = cfg.dataset.label_noise
    assert cfg.dataset.name == "fashion_mnist" and noise.kind == "class_map"  # the study's code
    assert noise.train and noise.test  # scored on the overlapping and on the clean labels
    assert cfg.eval.n_bins == 15 and cfg.optimizer.lr == 1e-3 and cfg.trainer.batch_size == 500
