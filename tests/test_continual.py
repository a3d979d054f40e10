"""Continual learning: the metrics against hand-computed matrices, weight aligning, the growing
head, herding, the reservoir, distillation around any method, and runs of both protocols on
digits (every learner, a mixer inside each step, DualMix, kill-and-resume inside a step)."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

from conftest import make_cfg
from mixbench.components import BACKBONES, METHODS
from mixbench.continual import continual_metrics, weight_align
from mixbench.continual.classes import class_order, step_sizes
from mixbench.continual.kd import Distilled
from mixbench.continual.head import grow_head, row_norms
from mixbench.continual.memory import ExemplarMemory, ReservoirBuffer, herding
from mixbench.app.train import train
from mixbench.engine.checkpoint import load_checkpoint
from mixbench.errors import ConfigError
from mixbench.losses.distill import soft_cross_entropy

QUICK = ["trainer.progress=false", "trainer.epochs=1"]


# --- metrics -------------------------------------------------------------------------------

MATRIX = [[0.9, None, None],
          [0.6, 0.8, None],
          [0.5, 0.7, 0.9]]


def test_metrics_of_a_hand_computed_matrix():
    acc = [[v or 0.0 for v in row] for row in MATRIX]
    metrics = continual_metrics(acc)
    # seen accuracy per step: 0.9, (0.6+0.8)/2 = 0.7, (0.5+0.7+0.9)/3 = 0.7
    assert metrics["avg_incremental_acc"] == pytest.approx((0.9 + 0.7 + 0.7) / 3)
    assert metrics["final_avg_acc"] == pytest.approx(0.7)
    # forgetting: step 0 best 0.9 → 0.5, step 1 best 0.8 → 0.7: mean(0.4, 0.1)
    assert metrics["forgetting"] == pytest.approx(0.25)
    # bwt: (0.5 - 0.9 + 0.7 - 0.8) / 2
    assert metrics["bwt"] == pytest.approx(-0.25)


def test_sizes_weight_the_accuracy_on_all_seen_classes_and_one_step_has_no_forgetting():
    acc = [[v or 0.0 for v in row] for row in MATRIX]
    weighted = continual_metrics(acc, sizes=[1, 3, 1])
    assert weighted["final_avg_acc"] == pytest.approx((0.5 + 3 * 0.7 + 0.9) / 5)
    assert weighted["avg_incremental_acc"] == pytest.approx(
        (0.9 + (0.6 + 3 * 0.8) / 4 + (0.5 + 3 * 0.7 + 0.9) / 5) / 3)
    assert weighted["forgetting"] == pytest.approx(0.25)  # per step: sizes do not enter
    single = continual_metrics([[0.75]])
    assert single == {"avg_incremental_acc": 0.75, "final_avg_acc": 0.75, "forgetting": None,
                      "bwt": None}
    with pytest.raises(ValueError, match="T×T"):
        continual_metrics([[0.1, 0.2]])


# --- classes, head, memory -----------------------------------------------------------------

def test_class_order_is_pycils_permutation_and_steps_cover_every_class():
    np.random.seed(1993)
    assert class_order(10, 1993) == np.random.permutation(10).tolist()
    assert class_order(4, None) == [0, 1, 2, 3]
    assert step_sizes(10, 4, 3) == [4, 3, 3] and step_sizes(10, 5, 4) == [5, 4, 1]
    with pytest.raises(ConfigError, match="protocol.initial"):
        step_sizes(10, 0, 2)


def test_weight_align_equalises_the_mean_norms_exactly():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 5)
    with torch.no_grad():
        head.weight[3:] *= 3.0  # the new rows' norms are larger, as after a step
    bias, old_rows = head.bias.clone(), head.weight[:3].clone()
    before_old, before_new = row_norms(head, 3)
    gamma = weight_align(head, 3)
    assert gamma == pytest.approx(before_old / before_new)
    old, new = row_norms(head, 3)
    assert new == pytest.approx(old, rel=1e-6)
    assert torch.equal(head.bias, bias) and torch.equal(head.weight[:3], old_rows)
    with pytest.raises(ValueError, match="n_old"):
        weight_align(head, 5)


def test_the_head_grows_keeping_its_rows_and_new_rows_start_without_bias():
    model = BACKBONES.build({"name": "small_cnn"}, num_classes=3)
    with torch.no_grad():
        model.head.bias.fill_(0.5)
    rows = model.head.weight.clone()
    grow_head(model, 5)
    assert model.head.out_features == 5 and torch.equal(model.head.weight[:3], rows)
    assert model.head.bias[:3].eq(0.5).all() and model.head.bias[3:].eq(0).all()
    grow_head(model, 2)  # the first step's smaller head keeps the first rows
    assert torch.equal(model.head.weight, rows[:2])
    with pytest.raises(ConfigError, match="mixbench backbone"):
        grow_head(BACKBONES.build({"name": "timm", "model_name": "resnet10t"},
                                  num_classes=3), 4)


def greedy_herding(features, m):
    """The definition, by brute force: at each step the unchosen sample that brings the mean
    of the chosen ones closest to the class mean."""
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    mean, chosen = f.mean(0), []
    for k in range(1, m + 1):
        best = min((i for i in range(len(f)) if i not in chosen),
                   key=lambda i: np.linalg.norm(mean - (f[chosen].sum(0) + f[i]) / k))
        chosen.append(best)
    return chosen


def test_herding_picks_what_the_greedy_definition_picks():
    rng = np.random.RandomState(0)
    features = rng.randn(12, 5)
    assert herding(torch.tensor(features), 6).tolist() == greedy_herding(features, 6)
    assert herding(torch.tensor(features[:3]), 6).tolist() == greedy_herding(features[:3], 3)


def test_exemplar_memory_shrinks_old_classes_to_their_best_and_fills_new_ones():
    memory = ExemplarMemory(total=12, selection="random")
    rows = {c: torch.arange(10 * c, 10 * c + 10) for c in range(4)}
    memory.update(range(0, 2), seen=2, candidates=rows, generator=torch.Generator())
    assert {c: len(r) for c, r in memory.exemplars.items()} == {0: 6, 1: 6}
    first = {c: list(r) for c, r in memory.exemplars.items()}
    memory.update(range(2, 4), seen=4, candidates=rows, generator=torch.Generator())
    assert {c: len(r) for c, r in memory.exemplars.items()} == {0: 3, 1: 3, 2: 3, 3: 3}
    assert memory.exemplars[0] == first[0][:3]  # the best-first prefix
    assert all(10 * c <= i < 10 * c + 10 for c, r in memory.exemplars.items() for i in r)
    restored = ExemplarMemory(per_class=3)
    restored.load_state_dict(json.loads(json.dumps(memory.state_dict())))
    assert restored.exemplars == memory.exemplars
    assert torch.equal(restored.indices(), memory.indices())
    assert ExemplarMemory(total=10, per_class=2).size_for(seen=4) == 2  # per class wins
    with pytest.raises(ConfigError, match="protocol.memory_per_class"):
        ExemplarMemory(total=None, per_class=None)
    with pytest.raises(ConfigError, match="protocol.selection"):
        ExemplarMemory(selection="nearest")


def test_reservoir_keeps_each_stream_sample_with_probability_memory_over_seen():
    size, stream, trials = 10, 100, 2000
    kept = torch.zeros(stream)
    generator = torch.Generator().manual_seed(0)
    for _ in range(trials):
        buffer = ReservoirBuffer(size)
        for batch in torch.arange(stream).split(7):
            buffer.add(batch, generator)
        assert len(buffer.rows) == size and buffer.offered == stream
        kept[buffer.rows] += 1
    share = kept / trials  # each ≈ 0.1 (binomial sd ≈ 0.0067): a wide bound, a fixed seed
    assert share.min() > 0.07 and share.max() < 0.13
    assert share.sum().item() == pytest.approx(size)
    drawn = ReservoirBuffer(size)
    assert drawn.sample(4, generator).numel() == 0  # an empty buffer gives nothing


# --- distillation around a method ----------------------------------------------------------

def test_distillation_weights_the_old_classes_kd_on_the_inputs_the_method_trains_on():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(6, 5), torch.nn.Linear(6, 3)
    seen = []
    teacher.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x, labels = torch.randn(8, 6), torch.arange(8) % 5
    mixup = METHODS.build({"name": "mixup", "alpha": 0.5}, num_classes=5)
    method = Distilled(mixup, teacher, old_classes=3, temperature=2.0)
    ce = METHODS.build({"name": "erm"}, num_classes=5)  # (for its one-hot targets)
    torch.manual_seed(1)
    out = method.step(student, (x, labels), torch.nn.functional.cross_entropy)
    torch.manual_seed(1)
    mixed = mixup.mix_batch(x, ce.targets(labels, x.dtype))
    assert torch.equal(seen[0], mixed.x)  # the teacher saw the mixed batch
    logits = student(mixed.x)
    expected = (0.4 * torch.nn.functional.cross_entropy(logits, mixed.y)
                + 0.6 * soft_cross_entropy(logits[:, :3], teacher(mixed.x), 2.0))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_distillation_passes_the_protocols_calls_to_the_method():
    calls = []

    class Recording(METHODS.get("erm")):
        def start_step(self, old_classes):
            calls.append(("start_step", old_classes))

        def setup(self, data, train_loader):
            calls.append(("setup", data))

        def start_epoch(self, epoch, epochs):
            calls.append(("start_epoch", epoch, epochs))

    method = Distilled(Recording(num_classes=4), torch.nn.Linear(2, 2), 2, 2.0)
    method.start_step(2), method.setup("data", None), method.start_epoch(1, 3)
    assert calls == [("start_step", 2), ("setup", "data"), ("start_epoch", 1, 3)]


def test_kd_term_is_pycils_softened_cross_entropy():
    student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    p = torch.softmax(teacher / 2, 1)
    log_q = torch.log_softmax(student / 2, 1)
    assert soft_cross_entropy(student, teacher, 2.0).item() == \
        pytest.approx(-(p * log_q).sum().item())


# --- the protocols on digits ----------------------------------------------------------------

def continual_cfg(*overrides, steps="5"):
    cfg = make_cfg(*QUICK, "protocol=class_incremental", f"protocol.initial={steps}",
                   f"protocol.increment={steps}", "protocol.memory=60", *overrides)
    return cfg


def read(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("learner", ["finetune", "replay", "kd", "wa"])
def test_every_learner_runs_its_steps_and_reports_the_continual_numbers(learner, tmp_path):
    results = train(continual_cfg(f"protocol.learner={learner}", "+method=mixup"), tmp_path)
    continual = results["continual"]
    assert results["protocol"] == "class_incremental" and results["status"] == "completed"
    assert len(continual["acc_matrix"]) == 2 and continual["acc_matrix"][0][1] is None
    assert set(continual) >= {"avg_incremental_acc", "final_avg_acc", "forgetting", "bwt",
                              "steps", "class_order", "step_acc"}
    first, second = continual["steps"]
    assert first["seen"] == 5 and second["seen"] == 10
    assert sorted(first["classes"] + second["classes"]) == list(range(10))
    assert results["test"]["top1"] == pytest.approx(continual["final_avg_acc"], abs=1e-6)
    new_rows = 126 * 5  # about 126 training images a class
    if learner == "finetune":
        assert abs(second["samples"] - new_rows) < 30  # no memory
    else:
        assert abs(second["samples"] - new_rows - 60) < 30  # plus the 60 exemplars
    # the head the step evaluated and saved: its new rows' mean norm over its old rows',
    # computed here from the weights
    saved = load_checkpoint(tmp_path / "steps" / "step_01.pt")["model"]
    norms = next(v for k, v in saved.items() if k.endswith("head.weight")).norm(dim=1)
    ratio = (norms[5:].mean() / norms[:5].mean()).item()
    assert second["norm_ratio_after"] == pytest.approx(ratio, rel=1e-5)
    if learner == "wa":  # Weight Aligning equalised the norms, which it found unequal
        assert ratio == pytest.approx(1.0, abs=1e-5)
        assert abs(second["norm_ratio_before"] - 1) > 1e-3
    else:  # the other learners leave the head as it trained
        assert second["norm_ratio_after"] == second["norm_ratio_before"]
    assert (tmp_path / "steps" / "step_00.pt").exists() and (tmp_path / "last.pt").exists()
    assert [h["step"] for h in results["history"]] == [0, 1]


@pytest.mark.parametrize("method", ["mixup_cutmix", "manifoldmix", "regmixup", "rankmixup",
                                    "dualmix"])
def test_mixers_with_their_own_step_train_inside_distilling_steps(method, tmp_path):
    results = train(continual_cfg("protocol.learner=wa", f"+method={method}"), tmp_path)
    assert results["status"] == "completed"
    assert results["continual"]["steps"][1]["norm_ratio_after"] == pytest.approx(1, abs=1e-5)


def test_weight_clipping_keeps_the_head_non_negative(tmp_path):
    train(continual_cfg("protocol.learner=wa", "protocol.clip_weights=true"), tmp_path)
    from mixbench.engine.checkpoint import load_checkpoint

    head = load_checkpoint(tmp_path / "last.pt")["model"]["head.weight"]
    assert head.min() >= 0.0


def test_bad_protocol_options_name_the_key(tmp_path):
    for override, key in [("protocol.learner=lwf", "protocol.learner"),
                          ("protocol.temperature=0", "protocol.temperature"),
                          ("+protocol.later.lr=1", "protocol.later")]:
        with pytest.raises(ConfigError, match=key):
            train(continual_cfg(override), tmp_path / key)
    with pytest.raises(ConfigError, match="classification"):
        train(make_cfg(*QUICK, "protocol=class_incremental", "dataset=diabetes"),
              tmp_path / "regression")


@pytest.mark.parametrize("method", ["erm", "dualmix"])
def test_online_stream_with_a_reservoir(method, tmp_path):
    cfg = make_cfg("trainer.progress=false", "protocol=online", "protocol.increment=5",
                   "protocol.memory=50", f"+method={method}")
    results = train(cfg, tmp_path)
    continual = results["continual"]
    assert len(continual["steps"]) == 2
    assert all(step["memory_size"] == 50 for step in continual["steps"])
    # one pass: each step trains on its classes' rows once, joined by replayed rows
    first, second = continual["steps"]
    batches = math.ceil(first["samples"] / 10)
    assert results["history"][0]["samples"] == first["samples"] + 10 * (batches - 5) + 40
    assert results["history"][1]["samples"] == second["samples"] + 10 * math.ceil(
        second["samples"] / 10)


def test_dualmix_mixes_old_with_new_and_leans_labels_to_the_old_class():
    method = METHODS.build({"name": "dualmix", "alpha": 1.0}, num_classes=4)
    method.start_step(old_classes=2)
    torch.manual_seed(0)
    x = torch.randn(8, 1, 6, 6)
    labels = torch.tensor([0, 1, 2, 3, 2, 3, 3, 2])  # 2 old samples, 6 new
    y = method.targets(labels, x.dtype)
    mixed, targets = method.adpmix_batch(x, y, labels)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    old_share = targets[:, :2].sum(1)  # every row pairs an old with a new sample
    assert (old_share > 0).all() and (targets[:, 2:].sum(1) > 0).all()
    # each row: λ' of the old input, λ'^p of the old label with p = 2/8: the label leans old
    for i in range(8):
        own_old = labels[i] < 2
        partner = [j for j in range(8) if bool(labels[j] < 2) != bool(own_old)]
        lam = next(lam for j in partner for lam in [_input_share(mixed[i], x[i], x[j])]
                   if lam is not None)
        old_input = lam if own_old else 1 - lam
        assert old_share[i].item() == pytest.approx(old_input ** 0.25, rel=1e-4)
    method.start_step(old_classes=0)  # no old classes yet: only EnMix and the clean batch
    out = method.step(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4)),
                      (x, labels), torch.nn.functional.cross_entropy)
    assert out.info["parts"] == 2 and out.logits.shape == (16, 4)


def test_dualmix_steps_never_wait_for_the_device():
    from conftest import steps_that_never_wait
    from mixbench.losses import CrossEntropy

    model = BACKBONES.build({"name": "small_cnn"}, num_classes=4).to("meta")
    method = METHODS.build({"name": "dualmix"}, num_classes=4)
    method.start_step(old_classes=2)
    batch = (torch.randn(8, 1, 8, 8, device="meta"), torch.arange(8, device="meta") % 4)
    outs = steps_that_never_wait(method, model, batch, CrossEntropy())
    assert all(out.info["parts"] == 3 for out in outs)


def _input_share(mixed, own, partner):
    """λ if mixed = λ·own + (1-λ)·partner, else None."""
    difference = own - partner
    lam = ((mixed - partner) * difference).sum() / (difference * difference).sum()
    return lam.item() if torch.allclose(lam * own + (1 - lam) * partner, mixed,
                                        atol=1e-5) else None


@pytest.mark.slow
@pytest.mark.parametrize("protocol,kill_at", [("class_incremental", (1, 1)),
                                              ("class_incremental", (2, 0)),
                                              ("online", (1, 0))])
def test_kill_and_resume_gives_the_same_final_numbers(protocol, kill_at, tmp_path, monkeypatch):
    """Stopped in step 2 at its second epoch, or as step 3 starts (after step 2 ended), or in
    the second step of a stream: the resumed run ends with the numbers of the one that ran
    through."""
    import mixbench.engine.fit as fit

    if protocol == "online":
        overrides = ["protocol=online", "protocol.increment=4", "protocol.memory=40",
                     "+method=dualmix"]
    else:
        overrides = ["protocol=class_incremental", "protocol.initial=4", "protocol.increment=3",
                     "protocol.memory=30", "protocol.learner=wa", "+method=mixup",
                     "trainer.epochs=2"]
    overrides = ["trainer.progress=false", "seed=2", *overrides]
    full = train(make_cfg(*overrides), tmp_path / "full")

    real_epoch, calls = fit.train_one_epoch, itertools.count()
    epochs_per_step = 1 if protocol == "online" else 2
    stop_at = kill_at[0] * epochs_per_step + kill_at[1]

    def killed(*args, **kwargs):
        if next(calls) == stop_at:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(fit, "train_one_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg(*overrides), tmp_path / "killed")
    monkeypatch.setattr(fit, "train_one_epoch", real_epoch)
    assert read(tmp_path / "killed")["status"] == "interrupted"
    resumed = train(make_cfg(*overrides, "trainer.resume=true"), tmp_path / "killed")
    assert resumed["continual"]["acc_matrix"] == full["continual"]["acc_matrix"]
    assert resumed["test"] == full["test"]
    assert [s["top1"] for s in resumed["continual"]["steps"]] == \
        [s["top1"] for s in full["continual"]["steps"]]


def test_leaderboard_rows_keep_learners_apart(tmp_path):
    from mixbench.results.table import columns_for, load_runs, protocol_options, summarize

    for learner in ("replay", "wa"):
        train(continual_cfg(f"protocol.learner={learner}"), tmp_path / learner)
    runs = load_runs(tmp_path).completed
    columns = columns_for("classification", runs)
    assert [c.key for c in columns[:4]] == ["avg_incremental_acc", "final_avg_acc",
                                            "forgetting", "bwt"]
    groups = ["method", *protocol_options(runs)]
    assert "protocol.learner" in groups
    table = summarize(runs, columns, groups)
    assert sorted(table["protocol.learner"]) == ["replay", "wa"]

    from test_results import leaderboard

    assert leaderboard(str(tmp_path), "--out", str(tmp_path / "board")) == 0
    text = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "## class_incremental · classification" in text and "avg inc. acc % ↑" in text
    assert 'alt="accuracy per step"' in (tmp_path / "board" / "leaderboard.html").read_text()
    # every step of every learner, averaged over its seeds, in step order
    from mixbench.continual.section import summarize_steps

    steps = summarize_steps(runs, ["protocol.learner"])
    assert list(zip(steps["protocol.learner"], steps["step"])) == [
        ("replay", 1), ("replay", 2), ("wa", 1), ("wa", 2)]
    assert list(steps["seen"]) == [5, 10, 5, 10]
    assert steps["norm_ratio_after"].iloc[3] == pytest.approx(1.0, abs=1e-5)
    assert "### class_incremental: after each step" in text


def test_online_refuses_several_processes_and_epochs(tmp_path):
    from mixbench.engine.context import prepare
    from mixbench.engine.distributed import DistInfo
    from mixbench.registry import PROTOCOLS

    cfg = make_cfg("trainer.progress=false", "protocol=online")
    assert cfg.trainer.epochs == 1  # the protocol's recipe: one pass
    ctx = prepare(cfg, tmp_path, DistInfo(rank=0, world_size=2, local_rank=0))
    with pytest.raises(ConfigError, match="trainer.devices=1"):
        PROTOCOLS.build(cfg.protocol)(ctx)
    with pytest.raises(ConfigError, match="trainer.epochs must be 1"):
        train(make_cfg("trainer.progress=false", "protocol=online", "trainer.epochs=3"),
              tmp_path / "epochs")


@pytest.mark.slow
def test_class_incremental_steps_run_on_two_processes(tmp_path):
    """Every rank grows the head, distils and selects the same exemplars; rank 0 writes."""
    from mixbench.app.train import run

    cfg = make_cfg("trainer.progress=false", "protocol=class_incremental", "protocol.initial=5",
                   "protocol.increment=5", "protocol.memory=40", "protocol.learner=wa",
                   "trainer.devices=2", "trainer.epochs=1", "backbone.norm=group")
    results = run(cfg, tmp_path)
    assert results["status"] == "completed" and results["timings"]["processes"] == 2
    assert len(results["continual"]["steps"]) == 2
    assert (tmp_path / "steps" / "step_01.pt").exists()
