"""Tables from synthetic run folders: means, stds and seed counts; failed runs apart."""
import json

import pytest

from mixbench.results.table import load_runs, summarize, to_markdown


def write_run(root, name, method, seed, top1, ece, status="completed"):
    run = root / name
    run.mkdir(parents=True)
    history = [{"epoch": e, "test_top1": top1 - 0.01 * (e % 3)} for e in range(1, 13)]
    (run / "results.json").write_text(json.dumps({
        "config": {"dataset": {"name": "digits"}, "backbone": {"name": "small_cnn"},
                   "method": {"name": method}, "loss": {"name": "soft_ce"},
                   "trainer": {"epochs": 12}},
        "status": status, "seed": seed, "history": history,
        "test": {"top1": top1, "ece": ece, "nll": 0.3, "brier": 0.1},
        "test_ts": {"ece": ece / 2, "nll": 0.25}, "temperature": 1.2,
        "timings": {"train_s": 10.0, "samples_per_s": 100.0}}))


def test_summary_means_stds_seeds_and_exclusions(tmp_path):
    write_run(tmp_path, "a", "mixup", 0, 0.90, 0.02)
    write_run(tmp_path, "b", "mixup", 1, 0.80, 0.04)
    write_run(tmp_path, "c", "erm", 0, 0.70, 0.10)
    write_run(tmp_path, "d", "erm", 1, 0.10, 0.90, status="failed")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "results.json").write_text("{not json")
    runs = load_runs(tmp_path)
    assert len(runs.completed) == 3 and list(runs.incomplete["status"]) == ["failed"]
    assert len(runs.unreadable) == 1 and runs.unreadable[0][0].endswith("e/results.json")
    table = summarize(runs.completed)
    mixup = table[table.method == "mixup"].iloc[0]
    assert mixup.top1 == pytest.approx(0.85) and mixup.top1_std == pytest.approx(0.05)
    assert mixup.seeds == 2 and table.iloc[0].method == "mixup"  # sorted by top-1
    erm = table[table.method == "erm"].iloc[0]
    assert erm.seeds == 1 and erm.top1 == pytest.approx(0.70)  # the failed run is not averaged
    # OpenMixup's metric: median of the last 10 epochs' test top-1
    assert runs.completed.set_index("run_dir").loc[str(tmp_path / "c"),
                                                   "last10_median_top1"] == pytest.approx(0.69)
    text = to_markdown(table)
    assert "**85.00 ± 5.00**" in text  # best top-1 (higher is better) in bold
    assert "**3.00 ± 1.00**" in text  # best ECE (lower is better) in bold


def test_constant_identity_columns_become_a_caption(tmp_path):
    write_run(tmp_path, "a", "mixup", 0, 0.9, 0.02)
    write_run(tmp_path, "b", "erm", 0, 0.8, 0.03)
    text = to_markdown(summarize(load_runs(tmp_path).completed))
    caption, table = text.split("\n\n")
    assert caption == "dataset digits · backbone small_cnn · loss soft_ce · epochs 12"
    assert "| method" in table and "| dataset" not in table
