"""The protocol layer: the worked example of docs/architecture.md runs as written, finished
runs open with load_run, trainer.init_from fine-tunes another run's weights, and
trainer.keep_every keeps checkpoints along the way."""
import json
import re

import pytest
import torch
from omegaconf import open_dict

from conftest import ROOT
from mixbench.components import build_components
from mixbench.engine.checkpoint import load_checkpoint
from mixbench.engine.load import init_from_run, load_run
from mixbench.app.train import train
from mixbench.errors import CheckpointError, ConfigError
from mixbench.registry import PROTOCOLS
from mixbench.results.table import load_runs


def read(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def worked_example() -> str:
    """The python block under "A new protocol, worked" in docs/architecture.md."""
    text = (ROOT / "docs/architecture.md").read_text()
    section = text[text.index("## A new protocol, worked"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def learning_curve(monkeypatch):
    """The documented protocol, registered for this test only."""
    monkeypatch.setattr(PROTOCOLS, "_factories", dict(PROTOCOLS._factories))
    exec(compile(worked_example(), "docs/architecture.md", "exec"), {})
    return PROTOCOLS.get("learning_curve")


def test_the_documented_protocol_runs_and_gets_its_own_table(learning_curve, cfg_factory,
                                                             tmp_path):
    cfg = cfg_factory("+method=mixup")
    with open_dict(cfg):
        cfg.protocol = {"name": "learning_curve", "budgets": [2, 1]}
    results = train(cfg, tmp_path / "curve")
    assert results["protocol"] == "learning_curve" and results["status"] == "completed"
    assert [point["epochs"] for point in results["learning_curve"]] == [1, 2]
    assert [r["epoch"] for r in results["history"]] == [1, 2]  # one run, continued
    assert results["test"]["top1"] == results["learning_curve"][-1]["top1"]
    assert read(tmp_path / "curve") == results

    train(cfg_factory("+method=mixup"), tmp_path / "standard")
    runs = load_runs(tmp_path).completed
    assert sorted(zip(runs.protocol, runs.task)) == [("learning_curve", "classification"),
                                                     ("standard", "classification")]


def test_unknown_protocol_lists_the_known_ones(cfg_factory, tmp_path):
    cfg = cfg_factory()
    with open_dict(cfg):
        cfg.protocol = {"name": "nosuch"}
    known = "class_incremental, distill, experts, online, retrieval, standard"
    with pytest.raises(ConfigError, match=f"Known protocols: {known}"):
        train(cfg, tmp_path)
    assert not (tmp_path / "results.json").exists()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from conftest import FAST, make_cfg

    run_dir = tmp_path_factory.mktemp("digits")
    train(make_cfg(*FAST, "+method=mixup"), run_dir)
    return run_dir


def test_load_run_gives_config_components_and_the_trained_weights(digits_run):
    run = load_run(digits_run, "cpu")
    assert run.cfg.method.name == "mixup" and run.state["epoch"] == 1
    assert run.parts.task.name == "classification"
    saved = load_checkpoint(digits_run / "last.pt")["model"]
    assert all(torch.equal(v, saved[k]) for k, v in run.parts.model.state_dict().items())
    x, labels = next(iter(run.loader("test")))
    assert len(x) == len(labels) == 360  # one evaluation batch of the test split


def test_load_run_of_a_folder_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_run(tmp_path, "cpu")


def test_init_from_keeps_the_body_and_starts_a_new_head(digits_run, cfg_factory):
    # digits (10 classes) into rotated digits (1 regression output), same small CNN
    parts = build_components(cfg_factory("dataset=rotated_digits"), torch.device("cpu"))
    fresh = {k: v.clone() for k, v in parts.model.state_dict().items()}
    source = load_checkpoint(digits_run / "last.pt")["model"]
    assert init_from_run(parts.model, digits_run) == ["head.bias", "head.weight"]
    for key, value in parts.model.state_dict().items():
        expected = fresh[key] if key.startswith("head.") else source[key]
        assert torch.equal(value, expected), key


def test_init_from_trains_a_fine_tuning_run(digits_run, cfg_factory, tmp_path):
    results = train(cfg_factory("dataset=rotated_digits", f"trainer.init_from={digits_run}"),
                    tmp_path)
    assert results["status"] == "completed" and results["task"] == "regression"
    assert results["config"]["trainer"]["init_from"] == str(digits_run)
    scratch = train(cfg_factory("dataset=rotated_digits"), tmp_path / "scratch")
    assert results["test"]["rmse"] != scratch["test"]["rmse"]


def test_init_from_another_architecture_is_refused(digits_run, cfg_factory, tmp_path):
    with pytest.raises(CheckpointError, match="beyond the classifier head"):
        train(cfg_factory("backbone.width=8", f"trainer.init_from={digits_run}"), tmp_path)
    with pytest.raises(CheckpointError, match="no weights file"):
        train(cfg_factory(f"trainer.init_from={tmp_path / 'nothing'}"), tmp_path / "b")


def test_keep_every_keeps_the_start_and_every_kth_epoch(cfg_factory, tmp_path):
    train(cfg_factory("trainer.epochs=4", "trainer.keep_every=2"), tmp_path)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["epoch_0000.pt", "epoch_0002.pt", "epoch_0004.pt"]
    states = {name: load_checkpoint(tmp_path / "checkpoints" / name) for name in kept}
    assert [s["epoch"] for s in states.values()] == [0, 2, 4]
    assert len(states["epoch_0002.pt"]["history"]) == 2
    last = load_checkpoint(tmp_path / "last.pt")
    assert all(torch.equal(v, last["model"][k])
               for k, v in states["epoch_0004.pt"]["model"].items())
    assert not all(torch.equal(v, last["model"][k])
                   for k, v in states["epoch_0002.pt"]["model"].items())


def test_by_default_only_the_last_checkpoint_is_kept(cfg_factory, tmp_path):
    train(cfg_factory("trainer.epochs=2"), tmp_path)
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "last.pt").exists()


def test_keep_every_must_be_a_count_of_epochs(cfg_factory, tmp_path):
    with pytest.raises(ConfigError, match="trainer.keep_every"):
        train(cfg_factory("trainer.keep_every=-1"), tmp_path)


def test_a_run_written_before_protocols_existed_is_the_same_experiment(cfg_factory, tmp_path):
    """Its config lacks protocol, trainer.init_from and trainer.keep_every: a sweep re-run
    skips it, and it re-evaluates as a standard run."""
    from mixbench.engine.checkpoint import save_checkpoint
    from mixbench.engine.load import evaluate_run

    first = train(cfg_factory(), tmp_path)

    def strip(config):
        config.pop("protocol")
        for key in ("init_from", "keep_every"):
            config["trainer"].pop(key)
        return config

    state = load_checkpoint(tmp_path / "last.pt")
    save_checkpoint(tmp_path / "last.pt", {**state, "config": strip(state["config"])})
    old = read(tmp_path)
    old.pop("protocol")
    (tmp_path / "results.json").write_text(json.dumps({**old, "config": strip(old["config"])}))
    assert train(cfg_factory(), tmp_path)["test"] == first["test"]  # skipped: completed
    again = evaluate_run(tmp_path, "cpu")
    assert again["protocol"] == "standard" and again["test"] == pytest.approx(first["test"])
