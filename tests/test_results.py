"""Tables and the leaderboard from synthetic run folders written here."""
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_tool

from mixbench.eval.reliability import pool_reliability
from mixbench.results.table import (attach_reference, columns_for, filter_runs, load_runs,
                                    summarize, to_markdown)

CLASSIFICATION = columns_for("classification")

BINS = [i / 15 for i in range(16)]


def reliability(count_last):
    count = [0] * 13 + [10, count_last]
    acc = [0.0] * 13 + [0.5, 1.0]
    return {"bins": BINS, "acc": acc, "conf": [0.0] * 13 + [0.9, 0.97], "count": count}


def write_run(root, name, method, seed, top1, ece, status="completed", epochs=12, lr=0.1,
              **extra):
    run = root / name
    run.mkdir(parents=True)
    history = [{"epoch": e, "test_top1": top1 - 0.01 * (e % 3)} for e in range(1, epochs + 1)]
    (run / "results.json").write_text(json.dumps({**extra,
        "config": {"dataset": {"name": "digits"}, "backbone": {"name": "small_cnn"},
                   "method": {"name": method}, "loss": {"name": "soft_ce"},
                   "trainer": {"epochs": epochs, "progress": seed % 2 == 0},
                   "optimizer": {"lr": lr}, "seed": seed},
        "task": "classification", "status": status, "seed": seed, "history": history,
        "test": {"top1": top1, "top5": 1.0, "ece": ece, "nll": 0.3, "brier": 0.1},
        "test_ts": {"ece": ece / 2, "nll": 0.25}, "temperature": 1.2,
        "reliability": reliability(20),
        "timings": {"train_s": 10.0, "samples_per_s": 100.0}}))
    return run


def write_regression_run(root, name, method, seed, rmse):
    run = root / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "config": {"dataset": {"name": "airfoil"}, "backbone": {"name": "mlp"},
                   "method": {"name": method}, "loss": {"name": "mse"},
                   "trainer": {"epochs": 5}, "seed": seed},
        "task": "regression", "status": "completed", "seed": seed,
        "test": {"rmse": rmse, "mae": rmse / 2, "mape": 0.02, "r2": 0.9}}))


@pytest.fixture
def runs_dir(tmp_path):
    write_run(tmp_path, "a", "mixup", 0, 0.90, 0.02)
    write_run(tmp_path, "b", "mixup", 1, 0.80, 0.04)
    write_run(tmp_path, "c", "erm", 0, 0.70, 0.10)
    write_run(tmp_path, "d", "erm", 1, 0.10, 0.90, status="failed")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "results.json").write_text("{not json")
    return tmp_path


def test_summary_means_stds_seeds_and_exclusions(runs_dir):
    runs = load_runs(runs_dir)
    assert len(runs.completed) == 3 and list(runs.incomplete["status"]) == ["failed"]
    assert len(runs.unreadable) == 1 and runs.unreadable[0][0].endswith("e/results.json")
    assert runs.duplicates.empty
    table = summarize(runs.completed, CLASSIFICATION)
    mixup = table[table.method == "mixup"].iloc[0]
    assert mixup.top1 == pytest.approx(0.85) and mixup.top1_std == pytest.approx(0.05)
    assert mixup.seeds == 2 and table.iloc[0].method == "mixup"  # sorted by top-1
    erm = table[table.method == "erm"].iloc[0]
    assert erm.seeds == 1 and erm.top1 == pytest.approx(0.70)  # the failed run is not averaged
    # OpenMixup's metric: median of the last 10 epochs' test top-1 (0.69 0.68 0.70 ... → 0.69)
    c = runs.completed.set_index("run_dir").loc[str(runs_dir / "c")]
    assert c.last10_median_top1 == pytest.approx(0.69)


def test_best_values_marked_by_direction(runs_dir):
    text = to_markdown(summarize(load_runs(runs_dir).completed, CLASSIFICATION), CLASSIFICATION)
    assert "top-1 % ↑" in text and "ECE % ↓" in text and "| T " in text
    assert "**85.00 ± 5.00**" in text  # best top-1: highest
    assert "**3.00 ± 1.00**" in text  # best ECE: lowest
    assert "**70.00" not in text and "**10.00" not in text


def test_constant_identity_columns_become_a_caption(runs_dir):
    text = to_markdown(summarize(load_runs(runs_dir).completed, CLASSIFICATION), CLASSIFICATION)
    caption, table = text.split("\n\n")
    assert caption == "dataset digits · backbone small_cnn · loss soft_ce · epochs 12"
    assert "| method" in table and "| dataset" not in table


def test_duplicates_ignore_execution_settings_but_not_hyperparameters(tmp_path):
    write_run(tmp_path, "a", "mixup", 0, 0.9, 0.02)
    write_run(tmp_path, "a_again", "mixup", 0, 0.9, 0.02)
    write_run(tmp_path, "a_other_lr", "mixup", 0, 0.9, 0.02, lr=0.05)
    dups = load_runs(tmp_path).duplicates
    assert sorted(p.split("/")[-1] for p in dups.run_dir) == ["a", "a_again"]


def test_filter_and_group_by(runs_dir):
    runs = load_runs(runs_dir).completed
    assert set(filter_runs(runs, {"method": "erm"}).method) == {"erm"}
    assert len(filter_runs(runs, {"epochs": "12"})) == 3
    with pytest.raises(KeyError, match="cannot filter on 'colour'"):
        filter_runs(runs, {"colour": "red"})
    by_seed = summarize(runs, CLASSIFICATION, group_by=["seed"])
    assert sorted(by_seed.seeds) == [1, 2]


def test_compare_to_published_table(runs_dir):
    summary = summarize(load_runs(runs_dir).completed, CLASSIFICATION)
    reference = pd.DataFrame({"dataset": ["digits", "digits"], "backbone": ["small_cnn"] * 2,
                              "method": ["vanilla", "mixup"], "epochs": [12, 12],
                              "top1": [75.0, 80.0]})
    merged = attach_reference(summary, reference, CLASSIFICATION[0])
    erm = merged[merged.method == "erm"].iloc[0]
    assert erm.ref_top1 == pytest.approx(0.75) and erm.delta_top1 == pytest.approx(-0.05)
    text = to_markdown(merged, CLASSIFICATION)
    assert "published top-1 %" in text and "+5.00" in text and "-5.00" in text


def test_regression_table_ranks_lower_rmse_first(tmp_path):
    write_regression_run(tmp_path, "a", "mixup", 0, 3.7)
    write_regression_run(tmp_path, "b", "cmixup", 0, 2.7)
    runs = load_runs(tmp_path).completed
    table = summarize(runs, columns_for("regression"))
    assert list(table.method) == ["cmixup", "mixup"]
    assert "**2.7000 ± 0.0000**" in to_markdown(table, columns_for("regression"))


def test_pooled_reliability_weights_by_count():
    pooled = pool_reliability([reliability(20), reliability(60)])
    assert pooled["count"][14] == 80 and pooled["count"][13] == 20
    assert pooled["acc"][14] == pytest.approx(1.0) and pooled["conf"][13] == pytest.approx(0.9)


def leaderboard(*args: str) -> int:
    """tools/leaderboard.py's main, in this process."""
    spec = importlib.util.spec_from_file_location("leaderboard", ROOT / "tools/leaderboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))


def test_one_table_per_protocol_and_task_each_with_its_columns(runs_dir, tmp_path, capsys):
    # runs written before protocols existed (no "protocol" key) are standard runs
    write_run(runs_dir, "curve", "mixup", 0, 0.6, 0.2, protocol="learning_curve")
    write_regression_run(runs_dir, "reg", "cmixup", 0, 2.5)
    assert leaderboard(str(runs_dir), "--out", str(tmp_path)) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    titles = [line for line in md.splitlines() if line.startswith("## ")]
    assert titles == ["## learning_curve · classification (top-1: final)",
                      "## standard · classification (top-1: final)",
                      "## standard · regression"]
    regression = md[md.index("## standard · regression"):]
    assert "RMSE ↓" in regression and "top-1" not in regression
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert sorted(zip(csv.protocol, csv.task, csv.method)) == [
        ("learning_curve", "classification", "mixup"), ("standard", "classification", "erm"),
        ("standard", "classification", "mixup"), ("standard", "regression", "cmixup")]
    assert "## standard · regression" in capsys.readouterr().out


@pytest.mark.slow
def test_leaderboard_tool_writes_md_csv_html(runs_dir, tmp_path):
    write_run(runs_dir, "f", "cutmix", 0, 0.75, 0.05)
    out = tmp_path / "site"
    done = run_tool("tools/leaderboard.py", str(runs_dir), "--out", str(out),
                    "--top1", "last10_median", "--compare-to",
                    str(ROOT / "benchmarks/reference/openmixup_cifar_resnet18.csv"))
    assert done.returncode == 0, done.stderr
    assert "not completed (failed)" in done.stdout and "unreadable, skipped" in done.stdout
    assert "top-1: last10_median" in done.stdout
    md = (out / "leaderboard.md").read_text()
    assert "published top-1 %" in md  # the column is there; no CIFAR row matches digits runs
    csv = pd.read_csv(out / "leaderboard.csv")
    assert set(csv.method) == {"erm", "mixup", "cutmix"}
    page = (out / "leaderboard.html").read_text()
    assert page.count('class="reliability"') == 3 and "http" not in page.split("<script>")[0]

    bad = run_tool("tools/leaderboard.py", str(runs_dir), "--filter", "method=nosuch")
    assert bad.returncode == 1 and "no completed runs" in bad.stderr


@pytest.mark.slow
def test_html_page_shows_one_reliability_diagram_per_method(runs_dir, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    run_tool("tools/leaderboard.py", str(runs_dir), "--out", str(tmp_path))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         (tmp_path / "leaderboard.html").as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    assert 'data-diagrams-loaded="2"' in dom  # erm and mixup: both decoded in the browser
    assert dom.count('alt="reliability: ') == 2


@pytest.mark.slow
def test_regression_runs_compare_to_the_shipped_cmixup_table(tmp_path):
    write_regression_run(tmp_path, "a", "cmixup", 0, 2.8)
    write_regression_run(tmp_path, "b", "erm", 0, 3.0)
    out = run_tool("tools/leaderboard.py", str(tmp_path), "--compare-to",
                   "benchmarks/reference/cmixup_regression.csv")
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
    assert table.loc["cmixup", "ref_rmse"] == pytest.approx(2.717)
    assert table.loc["erm", "delta_rmse"] == pytest.approx(3.0 - 2.901)
    assert "published RMSE" in out.stdout


def test_a_continual_reference_matches_on_the_protocol_options():
    summary = pd.DataFrame({"dataset": ["cifar100"] * 2, "backbone": ["resnet32"] * 2,
                            "method": ["erm"] * 2, "protocol.learner": ["kd", "wa"],
                            "protocol.increment": ["20", "20"],
                            "avg_incremental_acc": [0.60, 0.72]})
    reference = pd.read_csv(ROOT / "benchmarks/reference/wa_cifar100.csv")
    columns = columns_for("classification", summary)
    assert columns[0].key == "avg_incremental_acc"
    merged = attach_reference(summary, reference, columns[0],
                              ["dataset", "backbone", "method", "protocol.learner",
                               "protocol.increment"])
    assert list(merged["ref_avg_incremental_acc"]) == pytest.approx([0.6184, 0.70])
    assert list(merged["delta_avg_incremental_acc"]) == pytest.approx([-0.0184, 0.02])


def test_every_protocol_section_is_registered_by_its_own_code():
    """The leaderboard knows each protocol's section of results.json (columns, extra tables,
    rows a run stands for) because the protocol registered it, not from a list of its own."""
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import mixbench.app.leaderboard; from mixbench.registry import "
         "SECTIONS; print(','.join(SECTIONS.names()))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert out.split(",") == sorted(["adaptation", "continual", "distill", "experts", "merge",
                                     "retrieval"])
    from mixbench.results import table

    source = Path(table.__file__).read_text()
    assert not any(f'"{name}"' in source for name in out.split(","))
