"""reproductions.md: seed papers' claims judged from synthetic run folders written here."""
import json
import logging

import pandas as pd
import pytest
import yaml
from test_results import leaderboard, write_run

from mixbench.config import CONFIG_DIR
from mixbench.errors import ConfigError
from mixbench.results.reproductions import (CAUSES, INCONCLUSIVE, NO_CAUSE, NOT_REPRODUCED,
                                            REPRODUCED, evaluate_claims, load_claims,
                                            metric_column, to_markdown, why_cause)
from mixbench.results.table import load_runs

UNTESTED = "needs the retrieval protocol"


def tag(run, value):
    """Label a written run as ``tag=VALUE`` on the command line would."""
    path = run / "results.json"
    results = json.loads(path.read_text())
    results["config"]["tag"] = value
    path.write_text(json.dumps(results))
    return run


def write_tagged(root, label, eces, top1=0.8):
    """One run per ECE value (one seed each), all tagged ``label``."""
    for seed, ece in enumerate(eces):
        tag(write_run(root, f"{label}{seed}", "mixup", seed, top1, ece), label)


def write_spec(path, claims):
    path.write_text(yaml.safe_dump(claims, sort_keys=False))
    return path


def claim(name, metric="ece", ours=None, baseline=None, **extra):
    return {"system": f"Paper {name}", "claim": f"claim {name}", "command": f"train {name}",
            "metric": metric, "ours": ours or {"tag": f"{name}_ours"},
            "baseline": baseline or {"tag": f"{name}_base"}, **extra}


@pytest.fixture
def five_claims(tmp_path):
    """Runs and a spec where, on ECE (lower is better), claim a is reproduced, b is not, c is
    within one std, d has no runs of its own, e is untested."""
    runs = tmp_path / "runs"
    write_tagged(runs, "a_ours", [0.02, 0.03])  # 2.50 ± 0.50 %
    write_tagged(runs, "a_base", [0.05, 0.06])  # 5.50 ± 0.50 %
    write_tagged(runs, "b_ours", [0.08, 0.09])
    write_tagged(runs, "b_base", [0.02, 0.03])
    write_tagged(runs, "c_ours", [0.03, 0.05])  # 4.00 ± 1.00 %: better, but by less than 1 std
    write_tagged(runs, "c_base", [0.045, 0.047])
    untested = {"system": "Paper e", "claim": "claim e", "command": "train e",
                "untested": UNTESTED}
    spec = write_spec(tmp_path / "claims.yaml", [
        claim("a", paper="ECE 1.3% vs 3.1% (CIFAR-10)", why="none: holds"),
        claim("b", why="scale: tiny data"), claim("c", why="none: was reproduced once"),
        claim("d", baseline={"tag": "a_base"}, why="none: held on runs kept elsewhere"),
        untested])
    return runs, spec


def test_verdicts_and_numbers_come_from_the_runs(five_claims):
    runs, spec = five_claims
    results = evaluate_claims(load_runs(runs).completed, load_claims(spec))
    assert [r.verdict for r in results] == [
        REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE,
        "no runs: ours (tag=d_ours) matched nothing", f"not tested here: {UNTESTED}"]
    a = results[0]
    assert (a.ours.runs, a.ours.mean, a.ours.std) == (2, pytest.approx(0.025),
                                                      pytest.approx(0.005))
    text = to_markdown(results)
    header, rule, *rows = text.splitlines()
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "system", "claim", "command", "ours", "baseline", "paper", "verdict", "why"]
    assert len(rows) == 5
    assert "`train a`" in rows[0] and "2.50 ± 0.50 % (2 runs)" in rows[0]
    assert "5.50 ± 0.50 % (2 runs)" in rows[0] and "ECE 1.3% vs 3.1% (CIFAR-10)" in rows[0]
    assert "claim a (ECE % ↓)" in rows[0]
    assert "4.00 ± 1.00 % (2 runs)" in rows[2] and "4.60 ± 0.10 % (2 runs)" in rows[2]
    assert "no runs" in rows[3] and "5.50 ± 0.50 % (2 runs)" in rows[3]
    assert UNTESTED in rows[4]
    whys = [row.strip("|").split("|")[-1].strip() for row in rows]
    # c's "none" was written for a reproduced verdict: the stale reason is flagged; d has no
    # runs here, so no verdict to hold its reason against
    assert whys == ["none: holds", "scale: tiny data",
                    "none: was reproduced once (written for a reproduced verdict)",
                    "none: held on runs kept elsewhere", "—"]


def test_tag_column_reads_the_run_config(five_claims, tmp_path):
    runs, _ = five_claims
    write_run(runs, "untagged", "erm", 0, 0.7, 0.1)
    table = load_runs(runs).completed.set_index("run_dir")
    assert table.loc[str(runs / "a_ours0"), "tag"] == "a_ours"
    assert pd.isna(table.loc[str(runs / "untagged"), "tag"])


@pytest.mark.parametrize("metric, ours_wins", [("ece", True), ("ts_ece", True),
                                               ("top1", True), ("nll", False)])
def test_each_metric_judged_in_its_direction(tmp_path, metric, ours_wins):
    # ours: higher top-1 and lower ECE (so lower ECE after TS: ece / 2); the same NLL
    tag(write_run(tmp_path, "ours", "rankmixup", 0, top1=0.90, ece=0.02), "ours")
    tag(write_run(tmp_path, "base", "mixup", 0, top1=0.80, ece=0.05), "base")
    runs = load_runs(tmp_path).completed
    spec = write_spec(tmp_path / "claims.yaml", [
        claim("x", metric, ours={"tag": "ours"}, baseline={"tag": "base"}),
        claim("y", metric, ours={"method": "mixup"}, baseline={"method": "rankmixup"})])
    verdicts = [r.verdict for r in evaluate_claims(runs, load_claims(spec))]
    if ours_wins:
        assert verdicts == [REPRODUCED, NOT_REPRODUCED]
    else:  # equal on both sides, one seed each: no difference at all
        assert verdicts == [INCONCLUSIVE, INCONCLUSIVE]


def test_after_ts_keys_take_their_base_metrics_direction():
    assert metric_column("ts_ece").header == "ECE after TS %"
    derived = metric_column("ts_top1")
    assert derived.higher_is_better is True and derived.scale == 100
    assert metric_column("geometry.nc1") is None


def test_geometry_json_values_become_columns_a_claim_can_use(tmp_path, caplog):
    for name, method, seed, angle in (("m0", "mixup", 0, 30.0), ("m1", "mixup", 1, 34.0),
                                      ("e0", "erm", 0, 60.0), ("e1", "erm", 1, 64.0)):
        run = write_run(tmp_path, name, method, seed, 0.8, 0.05)
        (run / "geometry.json").write_text(json.dumps({
            "nc1": 0.5, "mixed_diff_boundary_angle_deg": angle, "mixed_same_class_cos": None,
            "samples": 100, "method": method}))
    broken = write_run(tmp_path, "broken", "erm", 2, 0.8, 0.05)
    (broken / "geometry.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        table = load_runs(tmp_path).completed.set_index("run_dir")
    assert "geometry.json" in caplog.text and len(table) == 5  # the broken one is still a run
    assert table.loc[str(tmp_path / "m1"), "geometry.mixed_diff_boundary_angle_deg"] == 34.0
    assert table.loc[str(tmp_path / "m1"), "geometry.samples"] == 100
    assert "geometry.method" not in table and "geometry.mixed_same_class_cos" not in table
    assert table["geometry.nc1"].isna().sum() == 1  # the broken one's

    spec = write_spec(tmp_path / "claims.yaml", [claim(
        "g", "geometry.mixed_diff_boundary_angle_deg", ours={"method": "mixup"},
        baseline={"method": "erm"}, higher_is_better=False)])
    [result] = evaluate_claims(table.reset_index(), load_claims(spec))
    assert result.verdict == REPRODUCED and result.baseline.runs == 2  # the broken one has none
    assert "32.000 ± 2.000 (2 runs)" in to_markdown([result])


@pytest.mark.parametrize("change, message", [
    ({"baseline_runs": 3}, r"claim 1 \(Paper z\): unknown key\(s\) baseline_runs"),
    ({"claim": None}, r"claim 1 \(Paper z\): add claim"),
    ({"metric": "geometry.nc1"}, r"claim 1 \(Paper z\): no known direction for metric "
                                 r"'geometry.nc1': add higher_is_better"),
    ({"metric": "top1", "higher_is_better": False}, r"Paper z.*contradicts 'top1'"),
    ({"untested": "later"}, r"Paper z.*an untested claim has no metric, ours, baseline"),
    ({"ours": {}}, r"Paper z.*ours must map run-table columns to values"),
    ({"why": "luck: seeds"}, r"Paper z.*why must read 'CAUSE: reason' with CAUSE one of "
                             r"recipe, scale, method, unknown, none"),
    ({"why": "scale"}, r"Paper z.*why must read 'CAUSE: reason'"),
])
def test_spec_errors_name_the_claim_and_the_fix(tmp_path, change, message):
    entry = {k: v for k, v in {**claim("z"), **change}.items() if v is not None}
    spec = write_spec(tmp_path / "claims.yaml", [entry])
    with pytest.raises(ConfigError, match=message):
        load_claims(spec)


def test_leaderboard_writes_reproductions_md(five_claims, tmp_path, capsys):
    runs, spec = five_claims
    out = tmp_path / "site"
    assert leaderboard(str(runs), "--out", str(out), "--reproductions", str(spec)) == 0
    page = (out / "reproductions.md").read_text()
    assert page.startswith("# mixbench: reproductions\n")
    assert f"`tools/leaderboard.py {runs} --out {out} --reproductions {spec}` from 12" in page
    assert "2.50 ± 0.50 % (2 runs)" in page and "not tested here" in page
    printed = capsys.readouterr().out
    assert "# mixbench: reproductions" in printed
    assert "leaderboard.html, reproductions.md" in printed.splitlines()[-1]


def test_leaderboard_bad_spec_exits_2_and_writes_nothing(five_claims, tmp_path, capsys):
    runs, _ = five_claims
    spec = write_spec(tmp_path / "bad.yaml", [claim("z", "geometry.nc1")])
    out = tmp_path / "site"
    assert leaderboard(str(runs), "--out", str(out), "--reproductions", str(spec)) == 2
    assert "error: " in capsys.readouterr().err and not out.exists()


def test_the_cpu_preset_runs_every_tag_the_claims_select():
    """Every tagged claim's runs come from experiment=reproduce_cpu, or from the distillation
    study (its tags: MTT on plain / smooth experts, each AST option): each tag a claim selects
    is one of those, each reproduce_cpu configuration is used by a claim, and each option
    composes with its own tag."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import ROOT, make_cfg
    from mixbench.distill.study import COMPONENTS

    claims = load_claims(ROOT / "benchmarks/reference/claims.yaml")
    selected = {side["tag"] for c in claims for side in (c.ours, c.baseline) if "tag" in side}
    distill_study = {"mtt_plain", "mtt_smooth", *COMPONENTS}
    assert selected & distill_study  # the AST rows
    selected -= distill_study
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        preset = compose("train", overrides=["experiment=reproduce_cpu"],
                         return_hydra_config=True)
    swept = preset.hydra.sweeper.params["+reproduce"].split(",")
    assert sorted(swept) == sorted({p.stem for p in (CONFIG_DIR / "reproduce").glob("*.yaml")})
    assert selected == set(swept)
    for name in swept:
        assert make_cfg(f"+reproduce={name}").tag == name
    # the overlap study's runs score the noisy test labels and the clean ones
    noisy = make_cfg("+reproduce=mixup_overlap").dataset.label_noise
    assert noisy.test and noisy.kind == "class_map" and noisy.p > 0


def test_every_seed_claim_says_why_with_an_allowed_cause():
    """Each claim of benchmarks/reference/claims.yaml carries ``why: CAUSE: reason``, CAUSE
    one of recipe, scale, method, unknown, none (the loader rejects any other)."""
    from conftest import ROOT

    claims = load_claims(ROOT / "benchmarks/reference/claims.yaml")
    missing = [c.system for c in claims if c.why is None]
    assert not missing, f"claims without why: {missing}"
    assert {why_cause(c.why) for c in claims} <= set(CAUSES)
    assert NO_CAUSE in CAUSES


def test_the_leaderboard_keeps_differently_tagged_runs_apart(tmp_path):
    """Configurations of a study that share dataset, method and loss (mixup with and without
    label noise) are rows of their own, never one average."""
    runs = tmp_path / "runs"
    write_tagged(runs, "mixup", [0.05, 0.05], top1=0.99)
    write_tagged(runs, "mixup_overlap", [0.10, 0.10], top1=0.60)
    assert leaderboard(str(runs), "--out", str(tmp_path / "out")) == 0
    table = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    rows = {row.tag: row for row in table.itertuples()}
    assert sorted(rows) == ["mixup", "mixup_overlap"]
    assert rows["mixup"].top1 == pytest.approx(0.99) and rows["mixup"].seeds == 2
    assert rows["mixup_overlap"].top1 == pytest.approx(0.60)


def test_a_filter_on_a_column_no_run_has_selects_no_runs(tmp_path):
    """Claims about runs of another kind (merges) are 'no runs' until such runs exist, so one
    spec serves every folder."""
    runs = tmp_path / "runs"
    write_tagged(runs, "mixup", [0.05])
    spec = write_spec(tmp_path / "spec.yaml",
                      [claim("m", "top1", {"protocol.merger": "pcb"}, {"tag": "mixup"})])
    [result] = evaluate_claims(load_runs(runs).completed, load_claims(spec))
    assert result.verdict == "no runs: ours (protocol.merger=pcb) matched nothing"
