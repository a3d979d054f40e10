"""tools/merge.py on runs mixbench trained: θ₀, tasks fine-tuned from it with their own heads,
one λ chosen on validation, the reference rows, refusals that name what differs; and the
28×28 views of the image sets that make separate tasks."""
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, make_cfg, run_tool
from mixbench.components import DATASETS
from mixbench.app.train import train
from mixbench.errors import ConfigError
from mixbench.merging.runs import body_names, evaluate_task, load_tasks, merge_runs
from test_data import fake_fashion


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """θ₀ (digits, 2 epochs) and two runs fine-tuned from it: ERM, and mixup on noisy labels."""
    root = tmp_path_factory.mktemp("merge")
    train(make_cfg(*FAST, "trainer.epochs=2"), root / "base")
    tuned = {"a": [], "b": ["+method=mixup", "dataset.label_noise.p=0.2"]}
    for name, extra in tuned.items():
        train(make_cfg(*FAST, f"trainer.init_from={root / 'base'}", "optimizer.lr=0.02",
                       "seed=1", *extra), root / name)
    return root


def merge_cfg(root, merge="ties", **extra):
    return OmegaConf.create({
        "base": str(root / "base"), "models": [str(root / "a"), str(root / "b")],
        "merge": {"name": merge, **extra},
        "search": {"name": "grid", "scales": [0.5, 1.0], "budget": 4, "init": 1.0,
                   "lower": 0.8, "upper": 1.3},
        "bn": "recompute", "bn_batches": 2, "eval": {"n_bins": 15}, "device": "cpu",
        "seed": 0, "tag": None})


def test_a_merge_reports_every_task_and_chooses_lambda_on_validation(runs):
    record = merge_runs(merge_cfg(runs, "pcb", ratio=0.2))
    merge = record["merge"]
    assert record["protocol"] == "merge" and record["status"] == "completed"
    assert [row["dataset"] for row in merge["tasks"]] == ["digits", "digits"]
    assert [row["scale"] for row in merge["search"]] == [0.5, 1.0]
    best = max(merge["search"], key=lambda row: row["val_top1"])
    assert merge["scale"] == best["scale"]
    for row in merge["tasks"]:
        assert row["normalized"] == pytest.approx(row["top1"] / row["individual_top1"])
    assert merge["avg_top1"] == pytest.approx(np.mean([r["top1"] for r in merge["tasks"]]))
    assert record["config"]["protocol"] == {"name": "merge", "merger": "pcb", "bn": "recompute",
                                            "ratio": 0.2}
    assert record["config"]["method"]["name"] == "erm+mixup"


def test_every_merge_records_the_reference_rows(runs):
    """Each fine-tuned run on its own task (from the runs' own records, which say what
    evaluating them now says) and θ₀'s body under each head, beside the merge's own."""
    record = merge_runs(merge_cfg(runs, "ties"))
    references = record["merge"]["references"]
    _, tasks, names = load_tasks(runs / "base", [runs / "a", runs / "b"], torch.device("cpu"))
    own = [evaluate_task(task, 15) for task in tasks]
    for key in ("top1", "ece", "ts_ece"):
        assert references["individual"][f"avg_{key}"] == pytest.approx(
            np.mean([m[key] for m in own]), abs=1e-6), key
    assert references["individual"]["avg_normalized"] == 1.0
    assert references["base"]["avg_top1"] == pytest.approx(
        record["merge"]["base_avg_top1"])
    assert references["base"]["avg_top1"] == pytest.approx(
        np.mean([row["base_top1"] for row in record["merge"]["tasks"]]))
    assert references["individual"]["scale"] is None


def test_the_leaderboard_shows_each_reference_row_once(runs, tmp_path):
    from mixbench.results.io import write_json_atomic
    from mixbench.results.table import load_runs

    for merger in ("ties", "task_arithmetic"):
        (tmp_path / merger).mkdir()
        write_json_atomic(tmp_path / merger / "results.json", merge_runs(merge_cfg(runs, merger)))
    loaded = load_runs(tmp_path)
    table = loaded.completed
    assert sorted(table["protocol.merger"]) == ["base", "individual", "task_arithmetic", "ties"]
    assert loaded.duplicates.empty
    individual = table[table["protocol.merger"] == "individual"].iloc[0]
    assert individual["avg_normalized"] == 1.0 and individual["reference"] == "individual"


@pytest.mark.parametrize("name", ["individual", "base"])
def test_a_reference_row_is_not_a_merger(runs, name):
    with pytest.raises(ConfigError, match="not a merger.*reference rows"):
        merge_runs(merge_cfg(runs, name))


def test_merging_identical_models_gives_that_model_back(runs, tmp_path):
    """TIES with λ = 1 over two copies of one fine-tuned run is that run (BN merged too)."""
    cfg = merge_cfg(runs, "ties", top_k=1.0)
    cfg.models = [str(runs / "a"), str(runs / "a")]
    cfg.search.scales = [1.0]
    cfg.bn = "merge"
    record = merge_runs(cfg)
    for row in record["merge"]["tasks"]:
        assert row["top1"] == pytest.approx(row["individual_top1"])


def test_evolution_finds_one_lambda_per_task_within_the_bounds(runs):
    cfg = merge_cfg(runs, "pcb", ratio=0.2)
    cfg.search.name = "evolution"
    record = merge_runs(cfg)
    merge = record["merge"]
    assert len(merge["search"]) == 4  # the budget
    assert len(merge["scale"]) == 2 and all(0.8 <= s <= 1.3 for s in merge["scale"])
    best = max(merge["search"], key=lambda row: row["val_top1"])
    assert merge["scale"] == pytest.approx(best["scale"])
    assert merge_runs(cfg)["merge"]["scale"] == merge["scale"]  # seeded: the same search


def test_evolution_without_nevergrad_says_how_to_install_it(runs, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "nevergrad", None)
    cfg = merge_cfg(runs)
    cfg.search.name = "evolution"
    with pytest.raises(ConfigError, match="pip install nevergrad"):
        merge_runs(cfg)


def test_a_model_not_fine_tuned_from_the_base_is_refused(runs, tmp_path):
    train(make_cfg(*FAST), tmp_path / "scratch")
    cfg = merge_cfg(runs)
    cfg.models = [str(runs / "a"), str(tmp_path / "scratch")]
    with pytest.raises(ConfigError, match="not from base=.*trainer.init_from"):
        merge_runs(cfg)


def test_the_body_is_everything_but_the_head():
    from mixbench.components import BACKBONES

    net = BACKBONES.build({"name": "small_cnn"}, num_classes=10, in_channels=1)
    names = body_names(net)
    assert "head.weight" not in names and "head.bias" not in names
    assert set(names) | {"head.weight", "head.bias"} == set(net.state_dict())


@pytest.mark.slow
def test_tools_merge_writes_a_run_the_leaderboard_reads(runs, tmp_path):
    out = tmp_path / "merged"
    run_tool("tools/merge.py", f"base={runs / 'base'}",
             f"models=[{runs / 'a'},{runs / 'b'}]", "merge=task_arithmetic",
             "search.scales=[0.3]", "device=cpu", f"hydra.run.dir={out}")
    record = json.loads((out / "results.json").read_text())
    assert record["merge"]["scale"] == 0.3
    board = run_tool("tools/leaderboard.py", str(out))
    assert "## merge · classification" in board.stdout and "normalised acc %" in board.stdout


def test_views_change_the_images_and_keep_labels_and_splits(tmp_path):
    fake_fashion(tmp_path)
    source = DATASETS.build({"name": "fashion_mnist", "root": str(tmp_path), "val_size": 10})
    turned = DATASETS.build({"name": "fashion_mnist_rotated", "root": str(tmp_path),
                             "val_size": 10})
    inverted = DATASETS.build({"name": "fashion_mnist_inverted", "root": str(tmp_path),
                               "val_size": 10, "max_train": 20})
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(turned, split).x,
                           torch.rot90(getattr(source, split).x, 1, dims=(-2, -1)))
        assert torch.equal(getattr(turned, split).y, getattr(source, split).y)
    assert torch.equal(inverted.test.x, 255 - source.test.x)
    assert len(inverted.train) == 20  # a stratified subset of the 50 training images
    assert inverted.mean[0] == pytest.approx((inverted.train.x.float() / 255).mean().item())
    digits = DATASETS.build({"name": "digits"})
    big = DATASETS.build({"name": "digits28", "max_train": 10_000})  # more than it has: all
    assert big.train.x.shape[1:] == (1, 28, 28) and big.image_size == (28, 28)
    assert torch.equal(big.train.y, digits.train.y) and torch.equal(big.test.y, digits.test.y)
    with pytest.raises(ConfigError, match="no option bogus"):
        DATASETS.build({"name": "digits28", "bogus": 1})
    with pytest.raises(ConfigError, match="quarter_turns"):
        DATASETS.build({"name": "fashion_mnist_rotated", "root": str(tmp_path),
                        "quarter_turns": 4})


def test_the_leaderboard_shows_each_mergers_validation_curve_over_lambda(runs, tmp_path):
    from mixbench.results.io import write_json_atomic
    from test_results import leaderboard

    curves = {}
    for merger in ("pcb", "task_arithmetic"):
        record = merge_runs(merge_cfg(runs, merger))
        (tmp_path / "runs" / merger).mkdir(parents=True)
        write_json_atomic(tmp_path / "runs" / merger / "results.json", record)
        curves[merger] = {row["scale"]: row["val_top1"] for row in record["merge"]["search"]}
    assert leaderboard(str(tmp_path / "runs"), "--out", str(tmp_path / "out")) == 0
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    table = text[text.index("validation top-1 (mean over the tasks) at each λ"):]
    assert "| λ = 0.5" in table and "| λ = 1 " in table
    for merger, curve in curves.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {merger} "))
        for scale in (0.5, 1.0):
            assert f"{100 * curve[scale]:.2f} ± 0.00" in row


@pytest.mark.parametrize("change, message", [
    ({"merge": {"name": "pcb", "ratoi": 0.1}}, "merge=pcb has no option ratoi; its options are "
                                               "ratio, clip, form, thresholds"),
    ({"merge": {"name": "magic"}}, "unknown merge=magic"),
    ({"bn": "freeze"}, "bn='freeze'"),
    ({"search": {"name": "random"}}, "search.name='random'")])
def test_bad_merge_settings_are_named_before_anything_loads(change, message, tmp_path):
    cfg = merge_cfg(tmp_path)  # no runs there: the settings are checked first
    cfg.merge_with(change)
    with pytest.raises(ConfigError, match=message):
        merge_runs(cfg)
