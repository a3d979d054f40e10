"""Regression end to end: datasets in their published file formats, metrics against
scikit-learn, C-Mixup's partner sampling against its kernel formula, and runs through the
composed config (including the headline `+method=cmixup` with no other argument)."""
import gzip
import json
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from conftest import HostToDeviceCopies, make_cfg, run_tool, steps_that_never_wait
from mixbench.data.loaders import InMemoryLoader
from mixbench.data.regression import Windows, rotate
from mixbench.app.train import train
from mixbench.errors import ConfigError, DatasetError, DatasetNotFoundError
from mixbench.eval.evaluate import original_units
from mixbench.eval.regression import regression_metrics
from mixbench.methods.cmixup import sample_partners, squared_distances
from mixbench.components import DATASETS, METHODS

FAST = ["trainer.epochs=2", "trainer.progress=false"]


# --- metrics -------------------------------------------------------------------------------
def test_regression_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    target = rng.normal(5, 2, size=(50, 3))
    target[0, 0] = 0.0  # MAPE skips zero targets
    pred = target + rng.normal(0, 0.5, size=target.shape)
    ours = regression_metrics(torch.tensor(pred), torch.tensor(target))
    nz = target != 0
    assert ours["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(target, pred)))
    assert ours["mae"] == pytest.approx(skm.mean_absolute_error(target, pred))
    assert ours["mape"] == pytest.approx(np.mean(np.abs(pred - target)[nz] / np.abs(target[nz])))
    assert ours["r2"] == pytest.approx(skm.r2_score(target, pred))  # uniform average


def test_regression_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        regression_metrics(torch.zeros(4, 1), torch.zeros(5, 1))


# --- C-Mixup's partner sampling --------------------------------------------------------------
def empirical(keys, pool, bandwidth, exclude, chunk_size, draws=4000):
    """Frequencies of each partner over many draws, done as one batched call."""
    reps = keys.repeat(draws, 1)
    picks = sample_partners(reps, pool, bandwidth, exclude=exclude.repeat(draws),
                            chunk_size=chunk_size)
    return torch.stack([torch.bincount(picks[i::len(keys)], minlength=len(pool))
                        for i in range(len(keys))]).double() / draws


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])  # 1: a chunk holding only row i
def test_partner_probabilities_match_the_kernel(chunk_size):
    torch.manual_seed(0)
    labels = torch.tensor([[0.0], [0.3], [0.5], [1.5], [2.0]])
    sigma, index = 0.5, torch.arange(5)
    d2 = (labels - labels.T) ** 2
    weight = torch.exp(-d2 / (2 * sigma ** 2)).double()
    weight.fill_diagonal_(0)  # j ≠ i
    expected = weight / weight.sum(1, keepdim=True)
    freq = empirical(labels, labels, sigma, index, chunk_size)
    assert freq.diagonal().sum() == 0
    assert torch.allclose(freq, expected, atol=0.03)


@pytest.mark.parametrize("dims", [1, 4])
def test_squared_distances_match_cdist(dims):
    a, b = torch.randn(7, dims), torch.randn(11, dims) * 3
    assert torch.allclose(squared_distances(a, b), torch.cdist(a, b) ** 2, atol=1e-4)


@pytest.mark.parametrize("bandwidth", [0.5, math.inf])
def test_partner_draws_never_wait_for_the_device(bandwidth):
    # On meta tensors (no values) .item() and boolean indexing raise, and HostToDeviceCopies
    # records host data sent to them: drawing partners, with exclusions falling in some
    # chunks and not others, never waits for a GPU.
    keys, pool = torch.empty(16, 1, device="meta"), torch.empty(100, 1, device="meta")
    exclude = torch.arange(16, device="meta")
    with HostToDeviceCopies() as copies:
        partners = sample_partners(keys, pool, bandwidth, exclude=exclude, chunk_size=30)
    assert partners.shape == (16,) and partners.dtype == torch.long
    assert not copies.found


def test_cmixup_step_never_waits_for_the_device():
    method, _ = cmixup_on(torch.linspace(0, 10, 64)[:, None], scope="batch")
    batch = (torch.empty(8, 1, device="meta"), torch.empty(8, 1, device="meta"))
    squared_error = lambda pred, target: ((pred - target) ** 2).mean()  # noqa: E731
    # (the warm-up step moves the label scale to the device, once)
    steps_that_never_wait(method, torch.nn.Identity(), batch, squared_error)


def test_tiny_bandwidth_pairs_nearest_labels_and_huge_approaches_uniform():
    torch.manual_seed(1)
    labels = torch.tensor([[0.0], [0.1], [1.0], [1.05], [3.0]])
    index = torch.arange(5)
    for chunk_size in (2, 8192):  # weights of e^-10⁶: kept apart chunk by chunk in log space
        nearest = sample_partners(labels.repeat(50, 1), labels, 1e-3,
                                  exclude=index.repeat(50), chunk_size=chunk_size)
        assert nearest.view(50, 5).eq(torch.tensor([1, 0, 3, 2, 3])).all()
    freq = empirical(labels, labels, 1e4, index, chunk_size=2)
    off_diagonal = freq[~torch.eye(5, dtype=torch.bool)]
    assert torch.allclose(off_diagonal, torch.full_like(off_diagonal, 0.25), atol=0.03)


def test_negligible_weights_are_zero_not_the_first_candidate(monkeypatch):
    # A uniform draw of exactly 0 picks the first entry with a positive weight: it must be the
    # only near label, not a far one whose weight (e^-20000, e^-5000 of it) underflows to 0.
    labels = torch.tensor([[0.0], [50.0], [100.0], [100.5]])
    monkeypatch.setattr(torch, "rand", lambda *shape, device=None: torch.zeros(*shape))
    pick = sample_partners(labels[2:3], labels, 0.5, exclude=torch.tensor([2]))
    assert pick.tolist() == [3]


# --- the C-Mixup step ----------------------------------------------------------------------
def cmixup_on(split_y, **kwargs):
    """A C-Mixup set up on a tiny in-memory regression set whose input equals its label."""
    from mixbench.data.bundle import DataBundle, Split

    split = Split(split_y.clone(), split_y)
    data = DataBundle(train=split, val=split, test=split, num_classes=1, in_channels=1,
                      image_size=None, task="regression", target_mean=(0.0,),
                      target_std=(1.0,), name="toy")
    loader = InMemoryLoader(split, 8, shuffle=True, drop_last=True, device="cpu",
                            mean=(0.0,), std=(1.0,), with_index=True)
    method = METHODS.build({"name": "cmixup", **kwargs}, num_classes=1)
    method.setup(data, loader)
    return method, loader


@pytest.mark.parametrize("scope", ["global", "batch"])
def test_cmixup_mixes_inputs_and_targets_with_one_lambda_and_close_partners(scope):
    torch.manual_seed(2)
    y = torch.linspace(0, 10, 64)[:, None]
    method, loader = cmixup_on(y, bandwidth=0.2, scope=scope)
    model = torch.nn.Identity()  # the prediction is the mixed input itself
    seen = []
    for batch in loader:
        out = method.step(model, batch, lambda pred, target: ((pred - target) ** 2).mean())
        lam = out.info["lam"]
        x, labels = batch[0], batch[1]
        # x == y for every sample, so the mixed input equals the mixed target: zero loss
        assert out.loss.item() == pytest.approx(0.0, abs=1e-10)
        partner = (out.logits - lam * x) / (1 - lam)
        gap = (partner - labels).abs()
        seen.append(gap)
        assert (gap > 1e-4).all()  # never paired with itself
    gaps = torch.cat(seen)
    # σ = 0.2 on labels 0.16 apart: partners are near neighbours (within the batch they can
    # be further: the batch holds only 8 of the 64 labels)
    assert gaps.median() < (0.5 if scope == "global" else 3.0)


def test_cmixup_defaults_and_validation():
    y = torch.randn(40, 1) * 3
    method, _ = cmixup_on(y)
    assert method.bandwidth == pytest.approx(0.25 * y.std().item(), rel=1e-4)
    assert METHODS.build({"name": "cmixup", "kernel": "uniform"}, num_classes=1)
    for bad, key in [({"alpha": 0}, "method.alpha"), ({"bandwidth": -1.0}, "method.bandwidth"),
                     ({"kernel": "cosine"}, "method.kernel"), ({"scope": "epoch"}, "method.scope"),
                     ({"mix_at": "head"}, "method.mix_at")]:
        with pytest.raises(ConfigError, match=key):
            METHODS.build({"name": "cmixup", **bad}, num_classes=1)


def test_cmixup_on_a_classification_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="regression dataset"):
        train(make_cfg(*FAST, "+method=cmixup", "dataset=digits"), tmp_path)
    assert not (tmp_path / "last.pt").exists()


# --- runs through the composed config --------------------------------------------------------
def read(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_plus_method_cmixup_alone_trains_on_an_embedded_regression_task(tmp_path):
    cfg = make_cfg("+method=cmixup", "trainer.progress=false", "trainer.epochs=3")
    assert cfg.dataset.name == "rotated_digits" and cfg.loss.name == "mse"
    results = train(cfg, tmp_path)
    saved = read(tmp_path)
    assert saved["status"] == "completed" and saved["task"] == "regression"
    assert set(saved["test"]) == set(saved["val"]) == {"rmse", "mae", "mape", "r2"}
    assert "temperature" not in saved and "reliability" not in saved
    assert [set(r) >= {"test_rmse", "train_loss"} for r in saved["history"]] == [True] * 3
    assert saved["history"][-1]["test_rmse"] == pytest.approx(results["test"]["rmse"])
    # angles are uniform in ±60°, std ≈ 35°: a model that learned anything beats that
    assert results["test"]["rmse"] < 30


def test_dataset_on_the_command_line_wins_and_brings_its_recipe():
    cfg = make_cfg("+method=cmixup", "dataset=diabetes")
    assert (cfg.dataset.name, cfg.backbone.name, cfg.loss.name) == ("diabetes", "mlp", "mse")
    assert cfg.trainer.batch_size == 16 and cfg.optimizer.lr == 0.01
    cfg = make_cfg("dataset=diabetes", "+method=mixup", "loss=mse", "trainer.batch_size=8")
    assert cfg.trainer.batch_size == 8
    assert make_cfg("+method=cmixup", "dataset=digits").loss.name == "soft_ce"


def test_classification_loss_on_regression_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="loss=mse"):
        train(make_cfg(*FAST, "dataset=diabetes", "loss=soft_ce"), tmp_path)


@pytest.mark.parametrize("method", ["erm", "mixup", "cmixup"])
def test_methods_on_tabular_regression_are_deterministic(tmp_path, method):
    overrides = (*FAST, f"+method={method}", "dataset=diabetes", "seed=3")
    a = train(make_cfg(*overrides), tmp_path / "a")
    b = train(make_cfg(*overrides), tmp_path / "b")
    assert a["test"] == b["test"] and a["test"]["rmse"] < 200  # targets span 25..346


def test_cmixup_manifold_and_batch_scope_run(tmp_path):
    results = train(make_cfg(*FAST, "+method=cmixup", "dataset=diabetes",
                             "method.mix_at=manifold", "method.scope=batch",
                             "method.kernel=feature"), tmp_path)
    assert results["status"] == "completed" and math.isfinite(results["test"]["rmse"])


@pytest.mark.slow
def test_regression_sweep_and_leaderboard_from_the_command_line(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_tool("tools/train.py", "-m", "+method=cmixup,mixup", "dataset=diabetes",
                   "trainer.epochs=2", "trainer.progress=false", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    assert len(list(sweep.rglob("results.json"))) == 2
    board = run_tool("tools/leaderboard.py", str(sweep))
    assert board.returncode == 0, board.stderr
    assert "RMSE ↓" in board.stdout and "| cmixup" in board.stdout
    evaluated = run_tool("tools/evaluate.py", str(next(sweep.rglob("results.json")).parent))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "rmse=" in evaluated.stdout and "[completed]" in evaluated.stdout


# --- datasets in their published formats -----------------------------------------------------
def test_airfoil_file_split_standardisation_and_units(tmp_path):
    rng = np.random.default_rng(0)
    table = np.column_stack([rng.uniform(0, 1, (200, 5)), rng.normal(125, 7, 200)])
    np.savetxt(tmp_path / "airfoil_self_noise.dat", table, delimiter="\t", fmt="%.6f")
    data = DATASETS.build({"name": "airfoil", "root": str(tmp_path)})
    assert (len(data.train), len(data.val), len(data.test)) == (140, 20, 40)
    assert data.task == "regression" and data.in_channels == 5 and data.num_classes == 1
    assert data.train.x.mean(0).abs().max() < 1e-5  # standardised with train statistics
    assert data.train.y.mean().abs() < 1e-5 and data.train.y.std() == pytest.approx(1, abs=1e-5)
    # every split, back in dB, is a set of rows of the file
    restored = torch.cat([original_units(s.y, data.target_mean, data.target_std)
                          for s in data.splits().values()]).squeeze(1)
    assert torch.allclose(restored.sort().values, torch.tensor(table[:, 5]).float().sort().values,
                          atol=1e-3)


def test_no2_reads_the_target_from_the_first_column(tmp_path):
    rng = np.random.default_rng(1)
    table = rng.normal(size=(100, 8))
    table[:, 0] = table[:, 1] * 2  # the target is a function of the first predictor
    np.savetxt(tmp_path / "NO2.dat", table, delimiter="  ", fmt="%.6f")
    data = DATASETS.build({"name": "no2", "root": str(tmp_path)})
    assert data.in_channels == 7
    y = original_units(data.train.y, data.target_mean, data.target_std).squeeze(1)
    corr = np.corrcoef(y.numpy(), data.train.x[:, 0].numpy())[0, 1]
    assert corr == pytest.approx(1.0, abs=1e-4)


def test_missing_and_malformed_files_say_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="airfoil_self_noise.dat"):
        DATASETS.build({"name": "airfoil", "root": str(tmp_path)})
    with pytest.raises(DatasetNotFoundError, match="dataset.root"):
        DATASETS.build({"name": "no2"})
    (tmp_path / "airfoil_self_noise.dat").write_text("1\t2\t3\n4\t5\t6\n")
    with pytest.raises(DatasetError, match="6"):
        DATASETS.build({"name": "airfoil", "root": str(tmp_path)})
    (tmp_path / "NO2.dat").write_text("1 2 3 4 5 6 7 8\n1 2 3 x 5 6 7 8\n")
    with pytest.raises(DatasetError, match="line 2"):
        DATASETS.build({"name": "no2", "root": str(tmp_path)})


@pytest.mark.slow
def test_train_cli_reports_a_missing_csv_without_a_traceback(tmp_path):
    out = run_tool("tools/train.py", "+method=cmixup", "dataset=airfoil",
                   f"dataset.root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    combined = out.stdout + out.stderr
    assert out.returncode == 1 and "airfoil_self_noise.dat" in combined
    assert "Traceback" not in combined


def test_time_series_windows_are_the_published_layout(tmp_path):
    steps, m = 400, 8
    series = np.arange(steps * m, dtype=np.float64).reshape(steps, m) + 1
    with gzip.open(tmp_path / "exchange_rate.txt.gz", "wt") as f:
        np.savetxt(f, series, delimiter=",", fmt="%.1f")
    data = DATASETS.build({"name": "exchange_rate", "root": str(tmp_path), "window": 10,
                           "horizon": 3})
    scaled = torch.tensor(series / series.max(0), dtype=torch.float32)  # per-column max
    first_target = 10 + 3 - 1
    assert len(data.train) == int(0.7 * steps) - first_target
    assert len(data.val) == int(0.8 * steps) - int(0.7 * steps)
    assert data.in_channels == 10 * m and data.num_classes == m
    i = 5  # the window of sample i ends `horizon` steps before its target time
    t = first_target + i
    assert torch.equal(data.train.x[torch.tensor([i])][0], scaled[t - 3 + 1 - 10:t - 3 + 1])
    y = original_units(data.train.y[i:i + 1], data.target_mean, data.target_std)[0]
    assert torch.allclose(y, scaled[t], atol=1e-5)
    model_in = data.train.x[torch.arange(4)]
    assert model_in.shape == (4, 10, m)


def test_windows_index_like_a_tensor():
    series = torch.arange(30.0).view(15, 2)
    windows = Windows(series, torch.tensor([3, 7, 15]), window=3)
    assert len(windows) == 3 and windows.dim() == 3
    assert torch.equal(windows[torch.tensor([2, 0])], torch.stack([series[12:15], series[0:3]]))
    assert torch.equal(windows[0:2], torch.stack([series[0:3], series[4:7]]))


def test_rotate_is_counter_clockwise_and_exact_at_right_angles():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.allclose(rotate(image, torch.tensor([0.0])), image, atol=1e-5)
    assert torch.allclose(rotate(image, torch.tensor([90.0])), torch.rot90(image, 1, (2, 3)),
                          atol=1e-4)


def test_rotated_digits_targets_are_the_angles():
    data = DATASETS.build({"name": "rotated_digits", "max_angle": 30.0})
    angles = torch.cat([original_units(s.y, data.target_mean, data.target_std)
                        for s in data.splits().values()])
    assert len(angles) == 1797 and angles.abs().max() <= 30.0 + 1e-4
    assert angles.std() > 10  # uniform on ±30°: std ≈ 17
    assert data.train.x.dtype == torch.uint8 and data.train.x.shape[1:] == (1, 16, 16)
    with pytest.raises(ConfigError, match="dataset.max_angle"):
        DATASETS.build({"name": "rotated_digits", "max_angle": 0})
