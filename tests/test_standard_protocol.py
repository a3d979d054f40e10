"""The standard protocol reports what mixbench reported before the protocol layer existed.

``fixtures/standard_protocol_before.json`` was written once by the trainer of commit bce3b5f
(before tasks, protocols and ``fit``) for the runs below: every metric, the history and the
keys of results.json. The same runs today must give the same numbers and the same keys, plus
``protocol`` (and the config keys added since, at values that change nothing). Both train
pinned (tests/pinned_cpu.py): the same numbers on any x86 machine. To write the fixture
again, from a checkout of bce3b5f:
``python tests/pinned_cpu.py CHECKOUT tests/fixtures/standard_protocol_before.json``."""
import json
from pathlib import Path

import pytest

from conftest import ROOT
from pinned_cpu import train_pinned

BEFORE = json.loads((Path(__file__).parent / "fixtures/standard_protocol_before.json").read_text())
# Keys added to the config since, at the values that reproduce the runs before them.
ADDED_CONFIG = {"protocol": {"name": "standard"},
                "trainer": {"init_from": None, "keep_every": 0}, "tag": None,
                "dataset": {"label_noise": {"train": True, "test": False, "test_seed": 1}},
                "eval": {"temperature_split": "val", "top1": "final", "top1_heads": "model"},
                "scheduler": {"min_lr": None, "by_epoch": False}}
ADDED_RESULTS = {"protocol", "headline"}
# Runs whose method's default changed since: the options that give the form they trained with
# (SmoothMix now defaults to OpenMixup's σ law and label weights), stripped like added keys.
SINCE = {"smoothmix_sample": {"method": {"alpha": 0.5, "sigma_law": "area",
                                         "label_weight": "kept"}}}
# Float sums may be taken in another order (e.g. F.cross_entropy's reduction): last-bit
# differences, nothing a table shows.
SAME = dict(rel=1e-6, abs=1e-9)


def without(tree: dict, added: dict) -> dict:
    """``tree`` without the keys of ``added`` that hold exactly the added value."""
    out = {}
    for key, value in tree.items():
        if key in added and isinstance(value, dict) and isinstance(added[key], dict):
            value = without(value, added[key])
            if not value:
                continue
        elif key in added and added[key] == value:
            continue
        out[key] = value
    return out


@pytest.mark.parametrize("name", sorted(BEFORE["runs"]))
def test_same_numbers_and_keys_as_before_the_protocol_layer(name, tmp_path):
    before = BEFORE["runs"][name]
    since = [f"{group}.{key}={value}" for group, options in SINCE.get(name, {}).items()
             for key, value in options.items()]
    now = train_pinned(ROOT, [*BEFORE["_about"]["common"], *before["overrides"], *since],
                       tmp_path)

    assert set(now) - {"git_sha", "timings"} - ADDED_RESULTS == \
        set(before) - {"overrides", "timings_keys"}
    assert sorted(now["timings"]) == before["timings_keys"]
    added = {**ADDED_CONFIG, "method": {k: v for k, v in SINCE.get(name, {}).get(
        "method", {}).items() if k not in before["config"]["method"]}}
    assert without(now["config"], added) == before["config"]
    assert now["status"] == "completed" and now["task"] == before["task"]
    assert now["protocol"] == "standard"
    for split in ("test", "test_ts", "val"):
        if split in before:
            assert now[split] == pytest.approx(before[split], **SAME), split
    assert now["seed"] == before["seed"]
    if "temperature" in before:
        assert now["temperature"] == pytest.approx(before["temperature"], **SAME)
    for key in ("reliability", "reliability_ts"):
        if key in before:
            for field, values in before[key].items():
                assert now[key][field] == pytest.approx(values, **SAME), (key, field)
    assert len(now["history"]) == len(before["history"])
    for record, old in zip(now["history"], before["history"]):
        record = {k: v for k, v in record.items() if k != "samples_per_s"}
        assert record.keys() == old.keys()
        assert record == pytest.approx(old, **SAME)
