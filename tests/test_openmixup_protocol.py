"""experiment=cifar100_r18_openmixup is OpenMixup's CIFAR-100 ResNet-18 recipe, value by value.

The expected values are literals copied from OpenMixup (Westlake-AI/openmixup); each names
the config file it comes from. Then the pieces the recipe needed: training on every training
image (no validation split, temperature not fitted), the reflect-padded crop, the
median-of-the-last-10-epochs headline with the best of a method's heads, and the leaderboard
showing that headline beside the published numbers."""
from __future__ import annotations

import importlib.util
import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, ROOT, make_cfg
from mixbench.components import SCHEDULERS
from mixbench.data.loaders import random_crop_flip
from mixbench.app.train import train
from mixbench.errors import ConfigError
from mixbench.registry import DATASETS
from mixbench.results.headline import headline, select_top1

PRESET = "experiment=cifar100_r18_openmixup"
# configs/classification/_base_/datasets/cifar100/sz32_bs100.py
SZ32_BS100 = {"crop": 32, "padding": 4, "padding_mode": "reflect", "flip": True,
              "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.201],
              "imgs_per_gpu": 100, "eval_interval": 1}
# configs/classification/cifar100/mixups/basic/r18_mixups_CE_none.py
R18_MIXUPS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0001, "min_lr": 0.0,
              "loss": "CrossEntropyLoss"}
# configs/classification/cifar100/automix/basic/r18_l2_a2_near_L1_01_mlr5e_2.py,
# .../samix/basic/r18_l2_a2_bili_val_dp0_mul_x_cat_L1_var_01_mlr5e_2.py,
# .../adautomix/basic/r18_l2_a1_bili_mlr5e_2.py: lr_config min_lr and alpha
POLICY_MIN_LR = {"automix": 0.05, "samix": 0.05, "adautomix": 0.05}
POLICY_ALPHA = {"automix": 2.0, "samix": 2.0, "adautomix": 1.0}
# OpenMixup's CIFAR-100 ResNet-18 table (docs/en/mixup_benchmarks/Mixup_cifar.md, shipped as
# benchmarks/reference/openmixup_cifar_resnet18.csv): alpha per method
TABLE_ALPHA = {"mixup": 1.0, "cutmix": 0.2, "manifoldmix": 2.0, "fmix": 0.2, "gridmix": 0.2,
               "saliencymix": 0.2, "resizemix": 1.0, "puzzlemix": 1.0, "alignmix": 2.0}


def test_the_preset_is_openmixups_recipe():
    cfg = make_cfg(PRESET, "+method=mixup")
    d, o, s, t = cfg.dataset, cfg.optimizer, cfg.scheduler, cfg.trainer
    assert (d.name, cfg.backbone.name) == ("cifar100", "resnet18")
    assert d.val_size == 0  # OpenMixup trains on all 50k images
    assert (32, d.crop_padding, d.crop_padding_mode, d.hflip) == (
        SZ32_BS100["crop"], SZ32_BS100["padding"], SZ32_BS100["padding_mode"],
        SZ32_BS100["flip"])
    assert list(d.mean) == SZ32_BS100["mean"] and list(d.std) == SZ32_BS100["std"]
    assert t.batch_size == SZ32_BS100["imgs_per_gpu"] and t.eval_every == SZ32_BS100[
        "eval_interval"]
    assert o._target_ == "torch.optim.SGD" and o.nesterov is False
    assert (o.lr, o.momentum, o.weight_decay) == (R18_MIXUPS["lr"], R18_MIXUPS["momentum"],
                                                  R18_MIXUPS["weight_decay"])
    assert (s.name, s.warmup_epochs, s.min_lr_ratio, s.min_lr, s.by_epoch) == (
        "cosine", 0, R18_MIXUPS["min_lr"], None, True)
    assert (cfg.loss.name, cfg.loss.label_smoothing) == ("soft_ce", 0.0)
    assert t.epochs == 200 and t.precision == "fp32"
    assert (cfg.eval.top1, cfg.eval.top1_heads, cfg.eval.temperature_split) == (
        "median_last_10", "best", "none")
    assert cfg.method.alpha == TABLE_ALPHA["mixup"]


@pytest.mark.parametrize("method", sorted(POLICY_MIN_LR))
def test_learned_policies_bring_openmixups_lr_floor(method):
    cfg = make_cfg(PRESET, f"+method={method}")
    assert cfg.scheduler.min_lr == POLICY_MIN_LR[method]
    assert cfg.method.alpha == POLICY_ALPHA[method]
    assert make_cfg(PRESET, "+method=mixup").scheduler.min_lr is None


def test_the_sweeps_methods_use_the_tables_alpha():
    for method, alpha in TABLE_ALPHA.items():
        assert make_cfg(PRESET, f"+method={method}").method.alpha == alpha, method


def lrs(scheduler_cfg: dict, epochs=4, steps=3, lr=0.1) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = SCHEDULERS.build(scheduler_cfg, optimizer=opt, epochs=epochs, steps_per_epoch=steps)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_by_epoch_with_an_absolute_floor_is_mmcvs_cosine_annealing():
    got = lrs({"name": "cosine", "min_lr": 0.05, "by_epoch": True})
    # mmcv annealing_cos(base, min_lr, epoch / max_epochs), held for the whole epoch
    want = [0.05 + (0.1 - 0.05) * (1 + math.cos(math.pi * e / 4)) / 2
            for e in range(4) for _ in range(3)]
    assert got == pytest.approx(want)
    per_step = lrs({"name": "cosine", "min_lr": 0.05})
    assert per_step[1] < per_step[0] and min(per_step) > 0.05  # per step, floored


def test_a_floor_above_the_lr_or_set_twice_is_refused():
    with pytest.raises(ConfigError, match="scheduler.min_lr=null"):
        lrs({"name": "cosine", "min_lr": 0.5})
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        lrs({"name": "cosine", "min_lr": 0.01, "min_lr_ratio": 0.1})
    assert min(lrs({"name": "step", "milestones": [1, 2], "gamma": 0.1, "min_lr": 0.05})) \
        == pytest.approx(0.05)


def write_fake_cifar100(root, per_class_train=2, per_class_test=1):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, per_class in (("train", per_class_train), ("test", per_class_test)):
        labels = [c for c in range(100) for _ in range(per_class)]
        data = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels}, f)


def test_val_size_zero_keeps_every_training_image(tmp_path):
    write_fake_cifar100(tmp_path)
    data = DATASETS.build({"name": "cifar100", "root": str(tmp_path), "val_size": 0,
                           "crop_padding_mode": "reflect", "mean": SZ32_BS100["mean"],
                           "std": SZ32_BS100["std"]})
    assert (len(data.train), len(data.val), len(data.test)) == (200, 0, 100)
    assert data.mean == tuple(SZ32_BS100["mean"]) and data.augment.padding_mode == "reflect"
    with pytest.raises(ConfigError, match=r"val_size must be in \[0, 200\)"):
        DATASETS.build({"name": "cifar100", "root": str(tmp_path), "val_size": -1})
    with pytest.raises(ConfigError, match="crop_padding_mode"):
        DATASETS.build({"name": "cifar100", "root": str(tmp_path), "val_size": 0,
                        "crop_padding_mode": "wrap"})


def test_a_run_without_validation_split_trains_on_all_and_fits_no_temperature(tmp_path):
    # digits: 1,797 images, 360 for test; without a validation split all 1,437 others train
    # (3 batches of 479: no sample is dropped).
    overrides = (*FAST, "dataset.val_fraction=0", "trainer.batch_size=479")
    with pytest.raises(ConfigError, match="eval.temperature_split=none"):
        train(make_cfg(*overrides), tmp_path / "refused")
    assert not (tmp_path / "refused" / "last.pt").exists()  # refused before training
    results = train(make_cfg(*overrides, "eval.temperature_split=none"), tmp_path / "run")
    assert results["history"][-1]["samples"] == 1437
    assert results["temperature"] is None
    assert not {"test_ts", "val", "reliability_ts"} & set(results)
    assert results["headline"]["top1"] == pytest.approx(results["test"]["top1"])  # final


def test_reflect_padding_mirrors_the_border():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    expected = np.pad(image[0, 0].numpy(), 2, mode="reflect")  # the numpy/PIL definition
    torch.manual_seed(0)
    crops = random_crop_flip(image.expand(64, 1, 4, 4), 2, False, "reflect")
    windows = {tuple(expected[i:i + 4, j:j + 4].ravel()) for i in range(5) for j in range(5)}
    assert all(tuple(c[0].ravel().tolist()) in windows for c in crops)
    corner = tuple(expected[:4, :4].ravel())  # crop at offset (0, 0): the mirrored corner
    assert corner[:3] == (10.0, 9.0, 8.0)
    assert corner in {tuple(c[0].ravel().tolist()) for c in crops}
    zeros = random_crop_flip(image.expand(64, 1, 4, 4), 2, False)
    assert (zeros == 0).sum() > (image == 0).sum() * 64  # zero padding shows up instead


def fake_history():
    # 15 epochs; the model's test top-1 of epochs 6..15 sorted is
    # .50 .50 .51 .52 .53 .54 .55 .56 .57 .58 → median (.53 + .54) / 2 = .535;
    # the EMA copy's: .54 .54 ... → median .545.
    model = [0.1, 0.2, 0.3, 0.4, 0.45,
             0.50, 0.52, 0.51, 0.55, 0.53, 0.54, 0.56, 0.50, 0.57, 0.58]
    ema = [0.0] * 5 + [0.54, 0.55, 0.54, 0.55, 0.54, 0.55, 0.54, 0.55, 0.54, 0.55]
    return [{"epoch": e + 1, "test_top1": m, "test_top1_ema": k}
            for e, (m, k) in enumerate(zip(model, ema))]


def test_median_of_the_last_10_epochs_and_the_best_head():
    history = fake_history()
    assert headline(history, "final")["top1"] == 0.58
    model = headline(history, "median_last_10")
    assert model["top1"] == pytest.approx(0.535) and model["epochs"] == list(range(6, 16))
    best = headline(history, "median_last_10", "best")
    assert (best["head"], best["top1"]) == ("ema", pytest.approx(0.545))
    assert best["per_head"]["model"] == pytest.approx(0.535)
    assert headline(history, "median_last_3")["top1"] == pytest.approx(0.57)
    with pytest.raises(ConfigError, match="median_last_N"):
        headline(history, "median_last_ten")
    assert headline([{"epoch": 1, "test_rmse": 2.0}], "median_last_10") is None


def leaderboard(*args: str) -> int:
    spec = importlib.util.spec_from_file_location("leaderboard", ROOT / "tools/leaderboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))


def write_run(root, name, seed, recorded):
    run = root / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "config": {"dataset": {"name": "cifar100"}, "backbone": {"name": "resnet18"},
                   "method": {"name": "mixup"}, "loss": {"name": "soft_ce"},
                   "trainer": {"epochs": 200},
                   "eval": {"top1": "median_last_10", "top1_heads": "best"}, "seed": seed},
        "task": "classification", "status": "completed", "seed": seed,
        "history": fake_history(), "test": {"top1": 0.58, "ece": 0.05, "nll": 1.0},
        "temperature": None, **({"headline": {"top1": recorded}} if recorded else {})}))


def test_the_leaderboard_shows_the_headline_beside_the_published_number(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "a", 0, 0.80)
    write_run(runs, "b", 1, None)  # written before headlines: computed from its history
    assert leaderboard(str(runs), "--top1", "headline", "--compare-to",
                       str(ROOT / "benchmarks/reference/openmixup_cifar_resnet18.csv")) == 0
    row = pd.read_csv(runs / "leaderboard.csv").iloc[0]
    assert row["top1"] == pytest.approx((0.80 + 0.545) / 2)
    assert row["ref_top1"] == pytest.approx(0.7852)  # MixUp, 200 epochs, published
    assert "top-1: headline" in (runs / "leaderboard.md").read_text()
    final = select_top1(pd.DataFrame({"top1": [0.58], "headline_top1": [0.8]}), "final")
    assert final["top1"].tolist() == [0.58]


def test_the_preset_trains_end_to_end_on_fake_cifar(tmp_path):
    """The preset itself, shrunk: 2 epochs of AutoMix on 200 fake CIFAR-100 images."""
    write_fake_cifar100(tmp_path / "data")
    cfg = make_cfg(PRESET, "+method=automix", f"dataset.root={tmp_path / 'data'}",
                   "trainer.epochs=2", "trainer.progress=false", "trainer.eval_batch_size=100",
                   "backbone=small_cnn", "backbone.width=8")
    results = train(cfg, tmp_path / "run")
    history = results["history"]
    assert [r["samples"] for r in history] == [200, 200]  # all 200 training images
    assert all("test_top1_ema" in r for r in history)  # the momentum copy is scored too
    lr_epoch_1 = 0.05 + 0.05 * (1 + math.cos(math.pi * 1 / 2)) / 2  # held for epoch 2
    assert history[0]["lr"] == pytest.approx(lr_epoch_1)  # the lr that epoch 2 trains at
    assert results["temperature"] is None
    top = results["headline"]
    assert top["rule"] == "median_last_10" and top["epochs"] == [1, 2]
    assert top["top1"] == max(top["per_head"].values())
    assert OmegaConf.create(results["config"]).scheduler.min_lr == 0.05
