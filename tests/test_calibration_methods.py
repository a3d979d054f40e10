"""RankMixup (MRL, M-NDCG) and MIX-KD: the losses' defining cases, the methods' steps, errors,
and 1-epoch runs through the composed config on digits."""
import json
import shutil

import pytest
import torch

from conftest import FAST, make_cfg, steps_that_never_wait
from mixbench.engine.checkpoint import save_checkpoint
from mixbench.engine.load import evaluate_run
from mixbench.app.train import train
from mixbench.errors import ConfigError
from mixbench.losses import CrossEntropy
from mixbench.losses.distill import distillation_kl
from mixbench.losses.ranking import mixup_ndcg_loss, mixup_ranking_loss
from mixbench.components import BACKBONES, METHODS

K = 4


def test_mrl_is_zero_when_mixed_is_below_raw_by_the_margin():
    raw = torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.0, 4.0, 1.0, 0.0]])
    below = raw - 2.0  # top logits exactly `margin` lower
    assert mixup_ranking_loss(raw, below, margin=2.0).item() == 0.0
    assert mixup_ranking_loss(raw, below - 1.0, margin=2.0).item() == 0.0
    # 0.5 short of the margin on both rows
    assert mixup_ranking_loss(raw, below + 0.5, margin=2.0).item() == pytest.approx(0.5)
    # masked rows (same-class pairs) count as zero
    keep = torch.tensor([True, False])
    assert mixup_ranking_loss(raw, below + 0.5, 2.0, keep).item() == pytest.approx(0.25)


def logits_with_confidence(conf):
    """K-class logits whose top softmax probability is ``conf`` (the rest equal)."""
    rest = (1 - conf) / (K - 1)
    return torch.log(torch.tensor([conf] + [rest] * (K - 1)))


def test_mndcg_zero_when_ordered_positive_when_reversed():
    relevance = torch.tensor([[0.9], [0.7], [0.55]])  # M=3 copies, B=1
    raw = logits_with_confidence(1.0 - 1e-9)[None]
    ordered = torch.stack([logits_with_confidence(r.item())[None] for r in relevance[:, 0]])
    reversed_ = torch.stack([logits_with_confidence(r.item())[None]
                             for r in relevance.flip(0)[:, 0]])
    assert mixup_ndcg_loss(raw, ordered, relevance).item() == pytest.approx(0.0, abs=1e-6)
    assert mixup_ndcg_loss(raw, reversed_, relevance).item() > 1e-3
    # over-confident copies (DCG above the ideal) are penalised too, never rewarded
    sure = torch.stack([logits_with_confidence(0.99)[None]] * 3)
    assert mixup_ndcg_loss(raw, sure, relevance).item() > 1e-3
    # the order of the copies in the batch does not matter, only confidence vs relevance
    perm = torch.tensor([2, 0, 1])
    assert mixup_ndcg_loss(raw, ordered[perm], relevance[perm]).item() == \
        pytest.approx(0.0, abs=1e-6)


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    torch.manual_seed(0)
    s = torch.randn(5, K)
    assert distillation_kl(s, s.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(s, torch.randn(5, K), 4.0).item() > 0
    # standardisation: a teacher that only differs in scale agrees with the student
    assert distillation_kl(s, 3 * s, 4.0).item() == pytest.approx(0.0, abs=1e-5)
    assert distillation_kl(s, 3 * s, 4.0, standardize=False).item() > 1e-3


def mlp():
    return BACKBONES.build({"name": "mlp", "width": 16}, num_classes=K, in_channels=6)


@pytest.mark.parametrize("mode", ["mrl", "mndcg"])
def test_rankmixup_step_is_clean_loss_plus_weighted_rank(mode):
    torch.manual_seed(0)
    model = mlp()
    x, labels = torch.randn(8, 6), torch.randint(0, K, (8,))
    method = METHODS.build({"name": "rankmixup", "mode": mode, "weight": 0.0}, num_classes=K)
    out = method.step(model, (x, labels), CrossEntropy())
    assert out.logits.shape == (8, K)  # raw logits first: training accuracy is on them
    clean = CrossEntropy()(model(x), labels)
    assert out.loss.item() == pytest.approx(clean.item(), rel=1e-5)
    assert len(out.info["lam"]) == (3 if mode == "mndcg" else 1)
    weighted = METHODS.build({"name": "rankmixup", "mode": mode, "weight": 1.0}, num_classes=K)
    torch.manual_seed(1)
    out = weighted.step(model, (x, labels), CrossEntropy())
    assert out.loss.item() == pytest.approx(clean.item() + out.info["rank_loss"].item(), rel=1e-5)
    out.loss.backward()


def test_mixkd_with_the_student_as_teacher_has_zero_kl():
    torch.manual_seed(0)
    model = mlp().eval()  # same mode for both, so the same logits
    method = METHODS.build({"name": "mixkd", "teacher_ckpt": __file__, "ce_weight": 0.0,
                            "kl_weight": 1.0, "mix_fraction": 0.5}, num_classes=K)
    method.teacher = model
    x, labels = torch.randn(8, 6), torch.randint(0, K, (8,))
    out = method.step(model, (x, labels), CrossEntropy())
    assert out.info["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    assert (out.info["lam"] < 1).sum() == 4  # exactly half the batch mixed


def test_mixkd_step_never_waits_for_the_device():
    # (see tests/test_methods.py) λ is drawn on the host and sent with host_to
    model = mlp().to("meta")
    method = METHODS.build({"name": "mixkd", "teacher_ckpt": __file__, "mix_fraction": 0.5},
                           num_classes=K)
    method.teacher = model
    batch = (torch.empty(8, 6, device="meta"), torch.empty(8, dtype=torch.long, device="meta"))
    steps_that_never_wait(method, model, batch, CrossEntropy())


def test_mixkd_partial_mixup_fraction():
    method = METHODS.build({"name": "mixkd", "teacher_ckpt": __file__, "mix_fraction": 0.25},
                           num_classes=K)
    x = torch.randn(16, 6)
    y = torch.nn.functional.one_hot(torch.randint(0, K, (16,)), K).float()
    mixed = method.mix_batch(x, y)
    unmixed = mixed.lam == 1
    assert (~unmixed).sum() == 4
    assert torch.equal(mixed.x[unmixed], x[unmixed]) and torch.equal(mixed.y[unmixed], y[unmixed])
    assert torch.allclose(mixed.y.sum(1), torch.ones(16))


@pytest.mark.parametrize("cfg,match", [
    ({"name": "rankmixup", "mode": "ndcg"}, "method.mode"),
    ({"name": "rankmixup", "num_mixed": 0}, "method.num_mixed"),
    ({"name": "rankmixup", "alpha": 0}, "method.alpha"),
    ({"name": "mixkd"}, "method.teacher_ckpt=PATH"),
    ({"name": "mixkd", "teacher_ckpt": __file__, "mix_fraction": 1.5}, "method.mix_fraction"),
    ({"name": "mixkd", "teacher_ckpt": __file__, "temperature": 0}, "method.temperature"),
])
def test_bad_method_configs_name_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        METHODS.build(cfg, num_classes=K)


# --- through Hydra on digits --------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A tiny ERM run to distil from (trained once for this module)."""
    run_dir = tmp_path_factory.mktemp("teacher")
    train(make_cfg(*FAST, "backbone.width=8"), run_dir)
    return run_dir


@pytest.mark.parametrize("overrides", [
    ["+method=rankmixup", "method.mode=mrl"],
    ["+method=rankmixup", "method.mode=mndcg"],
    ["+method=mixup", "loss=decoupled"],
    ["+method=mixup", "loss=bce", "loss.target_threshold=0.2"],
    ["loss=focal"],
])
def test_one_epoch_runs(cfg_factory, tmp_path, overrides):
    results = train(cfg_factory(*overrides), tmp_path)
    assert results["status"] == "completed"
    assert 0 < results["test"]["nll"] < 10 and results["temperature"] > 0


def test_mixkd_one_epoch_from_a_teacher_run(cfg_factory, tmp_path, teacher_run):
    teacher = tmp_path / "teacher.pt"
    shutil.copy(teacher_run / "last.pt", teacher)
    student = tmp_path / "student"
    results = train(cfg_factory("+method=mixkd", f"method.teacher_ckpt={teacher}"), student)
    assert results["status"] == "completed"
    # the checkpoint holds the teacher's fingerprint, not the teacher
    state = torch.load(student / "last.pt", weights_only=True)
    assert list(state["method"]) == ["teacher_sha256"]
    assert not any(k.startswith("teacher") for k in state["model"])
    # a finished student is re-evaluated without its teacher
    teacher.unlink()
    assert evaluate_run(student, "cpu")["test"] == results["test"]


def test_mixkd_rejects_missing_corrupt_and_mismatched_teachers(cfg_factory, tmp_path,
                                                               teacher_run):
    with pytest.raises(ConfigError, match="teacher_ckpt: no checkpoint at"):
        train(cfg_factory("+method=mixkd", f"method.teacher_ckpt={tmp_path / 'none'}"),
              tmp_path / "c")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="teacher_ckpt.*corrupt"):
        train(cfg_factory("+method=mixkd", f"method.teacher_ckpt={corrupt}"), tmp_path / "a")
    # a teacher with 5 classes for the 10 digits
    config = json.loads((teacher_run / "results.json").read_text())["config"]
    five = BACKBONES.build(config["backbone"], num_classes=5, in_channels=1)
    save_checkpoint(tmp_path / "five.pt", {"model": five.state_dict(), "config": config})
    with pytest.raises(ConfigError, match="5 classes but this dataset has 10"):
        train(cfg_factory("+method=mixkd", f"method.teacher_ckpt={tmp_path / 'five.pt'}"),
              tmp_path / "b")


def test_mixkd_teacher_is_frozen_and_in_eval_mode(teacher_run):
    from mixbench.methods.mixkd import load_teacher

    teacher = load_teacher(teacher_run, 10, 1)
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())


def test_reliability_figure_shows_before_and_after_temperature_scaling(cfg_factory, tmp_path,
                                                                       monkeypatch):
    import mixbench.eval.evaluate as evaluate

    drawn = []
    real = evaluate.plot_reliability
    monkeypatch.setattr(evaluate, "plot_reliability",
                        lambda panels, path: drawn.append(panels) or real(panels, path))
    results = train(cfg_factory(), tmp_path)
    (before, before_title), (after, after_title) = drawn[0]
    assert before == results["reliability"] and after == results["reliability_ts"]
    assert "after TS" in after_title and "after TS" not in before_title


def test_mixkd_resume_refuses_a_changed_teacher(tmp_path, teacher_run):
    from mixbench.errors import CheckpointError
    from mixbench.components import DATASETS

    data = DATASETS.build({"name": "digits"})
    teacher = tmp_path / "teacher.pt"
    shutil.copy(teacher_run / "last.pt", teacher)
    method = METHODS.build({"name": "mixkd", "teacher_ckpt": str(teacher)}, num_classes=10)
    method.setup(data, None)
    saved = method.state_dict()
    method.load_state_dict(saved)  # same teacher: fine
    state = torch.load(teacher, weights_only=True)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(teacher, {k: v for k, v in state.items() if k != "format"})
    resumed = METHODS.build({"name": "mixkd", "teacher_ckpt": str(teacher)}, num_classes=10)
    resumed.setup(data, None)
    with pytest.raises(CheckpointError, match="changed"):
        resumed.load_state_dict(saved)
