"""Test-time adapters (source, TBN, α-BN, EMA-BN, TENT, UnMix-TNS, UnMix-TNS + TENT) and
tools/adapt.py on a run mixbench trained: what each adapter changes, the streams' episodes,
the results record and its leaderboard tables, refusals that say what to do, and a source run
left as it was."""
import copy
import hashlib
import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import FAST, make_cfg, run_tool
from mixbench.config import CONFIG_DIR
from mixbench.components import BACKBONES
from mixbench.app.train import train
from mixbench.errors import ConfigError
from mixbench.registry import ADAPTERS
from mixbench.tta.adapters import NEEDS_BN, build_adapter, entropy
from mixbench.tta.norms import TestTimeNorm
from mixbench.data.loaders import InMemoryLoader
from mixbench.engine.load import load_run
from mixbench.tta.run import adapt_run, corrupted_test_sets, episodes
from mixbench.tta.unmix_tns import UnMixTNS2d


def source_model(norm="batch", seed=0) -> nn.Module:
    """A small CNN whose BatchNorm layers hold non-trivial source statistics and affines."""
    torch.manual_seed(seed)
    model = BACKBONES.build({"name": "small_cnn", "width": 8, "norm": norm}, num_classes=4)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


X = torch.randn(16, 1, 8, 8) * 2 + 1  # a shifted batch


def test_tbn_equals_train_mode_batchnorm_without_touching_running_statistics():
    model = source_model()
    reference = copy.deepcopy(model).train()
    before = bn_state(model)
    adapter = build_adapter("tbn", copy.deepcopy(model))
    out = adapter(X)
    torch.testing.assert_close(out, reference(X), rtol=1e-5, atol=1e-5)
    norms = [m for m in adapter.model.modules() if isinstance(m, TestTimeNorm)]
    assert len(norms) == 3
    for norm, value in zip(norms, [v for k, v in before.items() if k.endswith("running_mean")]):
        torch.testing.assert_close(norm.running_mean, value)  # never updated
        torch.testing.assert_close(norm.source_mean, value)


def test_alpha_bn_mixes_source_and_batch_statistics():
    bn = source_model().stem[0][1]  # the first BatchNorm2d
    norm = TestTimeNorm(bn, "alpha", alpha=0.25)
    z = torch.randn(8, bn.num_features, 5, 5) * 3 + 2
    mean = 0.75 * bn.running_mean + 0.25 * z.mean(dim=(0, 2, 3))
    var = 0.75 * bn.running_var + 0.25 * z.var(dim=(0, 2, 3), unbiased=True)
    expected = ((z - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps)
                * bn.weight[:, None, None] + bn.bias[:, None, None])
    torch.testing.assert_close(norm(z), expected, rtol=1e-5, atol=1e-5)


def test_ema_bn_moves_its_statistics_by_the_momentum_then_normalises_with_them():
    bn = source_model().stem[0][1]
    norm = TestTimeNorm(bn, "ema")
    z = torch.randn(8, bn.num_features, 5, 5) + 4
    out = norm(z)
    mean = 0.9 * bn.running_mean + 0.1 * z.mean(dim=(0, 2, 3))
    var = 0.9 * bn.running_var + 0.1 * z.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(norm.running_mean, mean)
    expected = torch.nn.functional.batch_norm(z, mean, var, bn.weight, bn.bias, False, 0.0,
                                              bn.eps)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(norm.source_mean, bn.running_mean)  # kept for reference


def test_source_changes_nothing_and_predicts_like_the_eval_model():
    model = source_model()
    expected = model(X)
    adapter = build_adapter("source", copy.deepcopy(model))
    torch.testing.assert_close(adapter(X), expected)
    torch.testing.assert_close(adapter(X), expected)  # nothing adapted between batches


@pytest.mark.parametrize("name", ["tent", "unmix_tns_tent"])
def test_tent_updates_only_the_normalisation_affine_parameters(name):
    model = source_model()
    adapter = build_adapter(name, copy.deepcopy(model), lr=0.01)
    before = {k: v.clone() for k, v in adapter.model.named_parameters()}
    first = adapter(X)
    adapter(X)
    changed = {k for k, v in adapter.model.named_parameters() if not torch.equal(v, before[k])}
    affine = {k for k, m in adapter.model.named_modules()
              if isinstance(m, (TestTimeNorm, UnMixTNS2d)) for k in (f"{k}.weight", f"{k}.bias")}
    assert changed and changed <= affine
    assert all(not p.requires_grad for k, p in adapter.model.named_parameters()
               if k not in affine)
    # the first batch is predicted before its own step (as TENT's code returns it)
    fresh = build_adapter(name, copy.deepcopy(model), lr=0.01)
    torch.testing.assert_close(first, fresh.model(X).detach())


def test_tent_lowers_the_entropy_of_a_batch_it_adapts_on():
    adapter = build_adapter("tent", source_model(), lr=0.05)
    start = entropy(adapter(X)).mean()
    for _ in range(5):
        adapter(X)
    assert entropy(adapter(X)).mean() < start


def test_unmix_tns_replaces_batchnorm2d_with_the_stream_defaults():
    adapter = build_adapter("unmix_tns", source_model(), num_components=4, batch_size_max=16)
    layers = [m for m in adapter.model.modules() if isinstance(m, UnMixTNS2d)]
    assert len(layers) == 3 and layers[0].component_means.shape == (4, 8)
    assert adapter(X).shape == (16, 4)


def test_unmix_tns_init_alpha_sets_the_components_spread():
    model = source_model()
    bn = model.stem[0][1]
    adapter = build_adapter("unmix_tns", copy.deepcopy(model), num_components=4, init_alpha=0.0)
    layer = adapter.model.stem[0][1]
    torch.testing.assert_close(layer.component_means, bn.running_mean.expand(4, -1))
    torch.testing.assert_close(layer.component_vars, bn.running_var.expand(4, -1))
    spread = build_adapter("unmix_tns", copy.deepcopy(model), num_components=4).model.stem[0][1]
    assert not torch.allclose(spread.component_means, bn.running_mean.expand(4, -1))
    with pytest.raises(ConfigError, match="init_alpha must be in"):
        build_adapter("unmix_tns", copy.deepcopy(model), init_alpha=1.0)


def test_models_without_batchnorm_are_refused_by_every_adapter_that_needs_it():
    model = source_model(norm="group")
    for name in NEEDS_BN:
        with pytest.raises(ConfigError, match="no BatchNorm.*" + ", ".join(NEEDS_BN)):
            build_adapter(name, copy.deepcopy(model))
    assert build_adapter("source", model)(X).shape == (16, 4)
    with pytest.raises(ConfigError, match="unknown adapter=tnet"):
        build_adapter("tnet", model)
    # an option the adapter does not take is named, with the ones it does
    with pytest.raises(ConfigError, match="adapter 'tbn'.*lr.*Its options are: seed"):
        build_adapter("tbn", model, lr=0.1)


@pytest.mark.parametrize("name", ["tbn", "alpha_bn", "ema_bn", "unmix_tns"])
def test_adapted_forwards_never_wait_for_the_device(name):
    """On the meta device a host read of a device value raises: no .item(), no syncs."""
    adapter = build_adapter(name, source_model().to("meta"))
    out = adapter(torch.empty(16, 1, 8, 8, device="meta"))
    assert out.shape == (16, 4) and out.device.type == "meta"


def test_episodes_reset_per_corruption_for_iid_and_dirichlet_and_not_otherwise():
    labels = torch.arange(200) % 4
    for name, delta, count in (("iid", None, 3), ("dirichlet", 0.1, 3), ("continual", None, 1),
                               ("mixed", None, 1)):
        stream = OmegaConf.create({"name": name, "delta": delta, "min_chunk": 10})
        parts = episodes(stream, labels, 3, seed=0)
        assert len(parts) == count
        flat = torch.cat(parts)
        assert sorted(flat.tolist()) == list(range(600))  # every (corruption, sample) once
    dirichlet = episodes(OmegaConf.create({"name": "dirichlet", "delta": 0.01}), labels, 3, 0)
    for d, part in enumerate(dirichlet):
        assert (part // 200 == d).all()  # one corruption per episode
        runs = (labels[part % 200][1:] != labels[part % 200][:-1]).sum().item()
        assert runs < 20  # long runs of one class (a shuffle of 200 has ~150 changes)


# --- tools/adapt.py on a trained run ----------------------------------------------------------

@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("adapt") / "source"
    train(make_cfg(*FAST, "+method=mixup", "backbone.width=8"), run_dir)
    return run_dir


def adapt_cfg(source, adapter="tbn", stream="iid", **extra):
    adapters = {"tent": {"lr": 0.001, "steps": 1},
                "unmix_tns": {"num_components": None, "batch_size_max": 64}}
    streams = {"iid": None, "dirichlet": 0.1, "continual": None, "mixed": None}
    return OmegaConf.create({
        "source": str(source), "adapter": {"name": adapter, **adapters.get(adapter, {})},
        "stream": {"name": stream, "delta": streams[stream], "min_chunk": 10},
        "corruption": ["gaussian_noise", "contrast"], "severity": 3, "corruption_root": None,
        "max_test": None, "batch_size": 32, "eval": {"n_bins": 15}, "device": "cpu",
        "seed": 0, "tag": None, **extra})


def test_the_error_column_is_the_source_models_misclassification_rate(source_run):
    """With the source adapter nothing adapts: each corruption's error must be the fraction of
    that corrupted test split the source model gets wrong, computed here from its predictions."""
    record = adapt_run(adapt_cfg(source_run, "source"))
    run = load_run(source_run, torch.device("cpu"))
    names = ["gaussian_noise", "contrast"]
    sets = corrupted_test_sets(run, names, 3, 0, None)
    data = run.parts.data
    for name, split, row in zip(names, sets, record["adaptation"]["corruptions"]):
        loader = InMemoryLoader(split, 64, shuffle=False, drop_last=False,
                                device=torch.device("cpu"), mean=data.mean, std=data.std)
        x, y = loader.fetch(torch.arange(len(split.y)), augment=False)
        with torch.no_grad():
            wrong = (run.parts.model.eval()(x).argmax(dim=1) != y).float().mean().item()
        assert row["corruption"] == name
        assert 0 < wrong < 1  # a split the model neither always gets right nor always wrong
        assert row["error"] == pytest.approx(wrong, abs=1e-6)


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_adapting_reports_every_corruption_and_never_changes_the_source_run(source_run):
    before = digests(source_run)
    record = adapt_run(adapt_cfg(source_run, "unmix_tns", "mixed"))
    assert digests(source_run) == before
    section = record["adaptation"]
    assert [r["corruption"] for r in section["corruptions"]] == ["gaussian_noise", "contrast"]
    assert section["source_method"] == "mixup" and section["source_seed"] == 0
    assert record["config"]["protocol"]["num_components"] == 128  # mixed domains: K = 128
    assert section["mean_ece"] == pytest.approx(
        sum(r["ece"] for r in section["corruptions"]) / 2)
    assert record["protocol"] == "adaptation" and record["seed"] == 0


def test_the_source_adapter_equals_evaluating_the_corrupted_test_split(source_run):
    from mixbench.shift.evaluate import evaluate_shift

    record = adapt_run(adapt_cfg(source_run, "source", corruption=["contrast"]))
    shifted = evaluate_shift(source_run, "contrast", 3, seed=0, device="cpu")
    (row,) = record["adaptation"]["corruptions"]
    assert row["top1"] == pytest.approx(shifted["test"]["top1"])
    assert row["nll"] == pytest.approx(shifted["test"]["nll"], rel=1e-5)
    (source_run / "shift.json").unlink()  # leave the module's run as it was


def test_the_same_settings_give_the_same_record(source_run):
    first = adapt_run(adapt_cfg(source_run, "tent", "dirichlet", max_test=120))
    second = adapt_run(adapt_cfg(source_run, "tent", "dirichlet", max_test=120))
    assert first["adaptation"]["corruptions"] == second["adaptation"]["corruptions"]
    assert first["adaptation"]["test_samples"] == 120


@pytest.mark.parametrize("change, message", [
    ({"stream": {"name": "iid", "delta": 0.1}}, "takes no stream.delta"),
    ({"stream": {"name": "dirichlet", "delta": None}}, "needs stream.delta > 0"),
    ({"stream": {"name": "sorted", "delta": None}}, "unknown stream=sorted"),
    ({"corruption": ["gaussian_nois"]}, "choose all, or names among"),
    ({"corruption_root": "/nowhere"}, "corruption_root reads CIFAR-10-C"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
])
def test_bad_settings_are_named(source_run, change, message):
    cfg = OmegaConf.merge(adapt_cfg(source_run), change)
    with pytest.raises(ConfigError, match=message):
        adapt_run(cfg)


def test_tools_adapt_writes_a_run_whose_tables_the_leaderboard_shows(source_run, tmp_path):
    out = tmp_path / "adapted"
    done = run_tool("tools/adapt.py", f"source={source_run}", "adapter=alpha_bn",
                    "stream=dirichlet", "corruption=[gaussian_noise,contrast]", "severity=2",
                    "device=cpu", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "results.json").read_text())
    assert record["config"]["protocol"]["alpha"] == 0.1
    board = run_tool("tools/leaderboard.py", str(out))
    assert "## adaptation · classification" in board.stdout
    assert "error % (mean)" in board.stdout
    assert "### adaptation: error % per corruption" in board.stdout
    assert "gaussian_noise" in board.stdout and "contrast" in board.stdout
    again = run_tool("tools/adapt.py", f"source={source_run}", "adapter=alpha_bn",
                     "stream=dirichlet", "corruption=[gaussian_noise,contrast]", "severity=2",
                     "device=cpu", f"hydra.run.dir={out}")
    assert "already holds this run: skipped" in again.stdout + again.stderr
    assert json.loads((out / "results.json").read_text()) == record


def test_a_sweep_names_each_folder_after_the_source_it_adapts():
    from omegaconf import OmegaConf as OC

    import mixbench.config  # noqa: F401  (the resolver)

    cfg = OC.create({"source": "runs/tta/mixup/seed2",
                     "sub": "${mixbench_path_tail:${source}}",
                     "one": "${mixbench_path_tail:${source},1}"})
    assert (cfg.sub, cfg.one) == ("mixup/seed2", "seed2")


def test_tools_adapt_explains_a_missing_source(tmp_path):
    done = run_tool("tools/adapt.py", f"source={tmp_path / 'missing'}", "device=cpu",
                    f"hydra.run.dir={tmp_path / 'out'}")
    assert done.returncode == 1
    assert "error:" in done.stderr + done.stdout
    # the folder says what happened: a failure record, never a completed one
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    assert record["status"] == "failed" and "missing" in record["error"]
    assert record["config"]["adapt"]["source"] == str(tmp_path / "missing")


def test_every_adapter_has_a_config():

    assert sorted(p.stem for p in (CONFIG_DIR / "adapter").glob("*.yaml")) \
        == ADAPTERS.names()
