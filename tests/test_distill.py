"""Dataset distillation (MTT with AST's options): the matching loss, the functional student
against module SGD, the gradient through one unrolled step against finite differences, the
gradient penalty and loss scale by hand, the initialisations, DSA, and runs on digits:
experts that resume exactly, a distillation that resumes to the same images, the evaluation
and its baselines, and the errors that name the fix."""
import copy
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT, make_cfg
from mixbench.config import CONFIG_DIR
from mixbench.components import BACKBONES
from mixbench.distill import (DSA, ParamLayout, StudentOptions, gradient_penalty, kmeans_real,
                              loss_scale, match_trajectory, random_real, representative,
                              trajectory_matching_loss, unroll)
from mixbench.distill.matching import balanced_weight, flatten, perturb_weights
from mixbench.engine.checkpoint import load_checkpoint
from mixbench.app.train import train
from mixbench.errors import ConfigError, RunExistsError


def tiny_net(dtype=torch.float32, classes=3):
    torch.manual_seed(0)
    net = BACKBONES.build({"name": "convnet", "width": 4, "depth": 1, "readout": 2},
                          num_classes=classes, in_channels=1)
    return net.to(dtype)


def tiny_set(dtype=torch.float32, ipc=2, classes=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(classes * ipc, 1, 4, 4, generator=gen, dtype=dtype)
    return images, torch.arange(classes).repeat_interleave(ipc)


# ---- the loss and the student ---------------------------------------------------------------

def test_matching_loss_is_zero_on_target_one_at_start_and_scale_invariant():
    gen = torch.Generator().manual_seed(0)
    start, target, end = (torch.randn(50, generator=gen) for _ in range(3))
    assert trajectory_matching_loss(target, start, target) == 0
    assert trajectory_matching_loss(start, start, target) == pytest.approx(1.0)
    loss = trajectory_matching_loss(end, start, target)
    assert loss > 0
    torch.testing.assert_close(trajectory_matching_loss(7.5 * end, 7.5 * start, 7.5 * target),
                               loss)
    expected = ((end - target) ** 2).sum() / ((start - target) ** 2).sum()
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="flat parameter vectors"):
        trajectory_matching_loss(end[:10], start, target)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_functional_student_steps_equal_module_sgd_steps(momentum):
    net = tiny_net(torch.float64)
    images, labels = tiny_set(torch.float64)
    layout = ParamLayout.of(net)
    start = flatten(p.detach() for p in net.parameters())
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    got = unroll(net, layout, start, images, labels, lr, steps=3, momentum=momentum, keep=(1,))

    module = copy.deepcopy(net)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=momentum)
    for step in range(1, 4):
        optimizer.zero_grad()
        F.cross_entropy(module(images), labels).backward()
        optimizer.step()
        if step in (1, 3):
            torch.testing.assert_close(got[step].detach(),
                                       flatten(p.detach() for p in module.parameters()))
    # the module the student was called through is untouched
    torch.testing.assert_close(flatten(p.detach() for p in net.parameters()), start)


def test_gradient_through_one_step_matches_finite_differences():
    net = tiny_net(torch.float64)
    images, labels = tiny_set(torch.float64, ipc=1)
    layout = ParamLayout.of(net)
    start = flatten(p.detach() for p in net.parameters())
    gen = torch.Generator().manual_seed(3)
    target = start + 0.05 * torch.randn(start.shape, generator=gen, dtype=torch.float64)

    def loss(x, lr):
        end = unroll(net, layout, start, x, labels, lr, steps=1)[1]
        return trajectory_matching_loss(end, start, target)

    x = images.clone().requires_grad_(True)
    lr = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (x, lr), eps=1e-6, atol=1e-6, rtol=1e-4)
    grad_x, = torch.autograd.grad(loss(x, lr), x)
    assert grad_x.abs().sum() > 0  # the loss does depend on the pixels


def test_intermediate_matching_adds_the_mid_trajectory_terms():
    net = tiny_net(torch.float64)
    images, labels = tiny_set(torch.float64)
    layout = ParamLayout.of(net)
    gen = torch.Generator().manual_seed(5)
    theta = flatten(p.detach() for p in net.parameters())
    trajectory = [theta + 0.02 * e * torch.randn(theta.shape, generator=gen,
                                                 dtype=torch.float64) for e in range(4)]
    lr = torch.tensor(0.1, dtype=torch.float64)
    common = dict(syn_steps=4, expert_epochs=2, max_start_epoch=2,
                  generator=torch.Generator().manual_seed(0))
    plain = match_trajectory(net, layout, trajectory, 1, images, labels, lr,
                             options=StudentOptions(), **common)
    middle = match_trajectory(net, layout, trajectory, 1, images, labels, lr,
                              options=StudentOptions(intermediate="equal"), **common)
    adaptive = match_trajectory(net, layout, trajectory, 1, images, labels, lr,
                                options=StudentOptions(intermediate="adaptive"), **common)
    kept = unroll(net, layout, trajectory[1], images, labels, lr, steps=4, keep=(2,))
    term = trajectory_matching_loss(kept[2], trajectory[1], trajectory[2])
    torch.testing.assert_close(plain, trajectory_matching_loss(kept[4], trajectory[1],
                                                               trajectory[3]))
    torch.testing.assert_close(middle, plain + term)
    torch.testing.assert_close(adaptive, plain + 0.5 * term)


def test_balanced_weight_and_weight_perturbation_follow_ast():
    import math

    assert balanced_weight(10, 20) == pytest.approx(math.log(8, 5))
    assert balanced_weight(15, 20) == pytest.approx(math.log(13, 5))
    assert balanced_weight(2, 20) == pytest.approx(1 / math.log(16, 5))
    params = [torch.ones(2, 1, 3, 3), torch.ones(5)]
    gen = torch.Generator().manual_seed(0)
    out = perturb_weights(params, gen)
    d = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[0], 1 + d / d.norm())
    assert out[1] is params[1]  # only conv kernels move


# ---- experts' smoothness terms ----------------------------------------------------------------

def test_gradient_penalty_matches_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4))
    x = torch.randn(5, 2, 3, 3, generator=gen)
    # ∂Σ_k f_k/∂x = the column sums of W, the same for every sample
    g = model[1].weight.detach().sum(0).view(2, 3, 3)
    expected = 2.0 * ((g.norm(dim=0) - 1) ** 2).mean()
    penalty = gradient_penalty(model, x)
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0


def test_loss_scale_rises_from_half_to_one_over_ten_epochs():
    assert [loss_scale(e) for e in range(12)] == pytest.approx(
        [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.0])


def test_dsa_is_differentiable_seeded_and_shares_one_draw_over_the_batch():
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    for op in ("color", "crop", "cutout", "flip", "scale", "rotate"):
        dsa = DSA(op)
        a = dsa(x, torch.Generator().manual_seed(7))
        b = dsa(x, torch.Generator().manual_seed(7))
        assert a.shape == x.shape and torch.equal(a, b)
        # one draw for the batch: identical rows give identical augmented rows
        same = dsa(x[:1].expand(3, -1, -1, -1), torch.Generator().manual_seed(3))
        assert torch.allclose(same[0], same[1]) and torch.allclose(same[0], same[2])
        a.sum().backward()
    assert x.grad is not None
    with pytest.raises(ConfigError, match="DSA strategy"):
        DSA("color_blur")


# ---- initialisations --------------------------------------------------------------------------

@pytest.mark.parametrize("ipc", [1, 3, 10, 12])
def test_initialisations_return_ipc_distinct_images_per_class(ipc):
    gen = torch.Generator().manual_seed(0)
    classes = 3
    images = torch.randn(classes * 30, 1, 4, 4, generator=gen)
    labels = torch.arange(classes).repeat(30)
    project = torch.randn(16, 5, generator=gen)
    picks = {
        "representative": representative(lambda x: x.flatten(1) @ project, images, labels,
                                         ipc, classes, seed=0),
        "kmeans": kmeans_real(images, labels, ipc, classes, seed=0),
        "random": random_real(labels, ipc, classes, torch.Generator().manual_seed(0)),
    }
    for name, rows in picks.items():
        assert len(rows) == classes * ipc, name
        assert len(set(rows.tolist())) == len(rows), name
        # class by class: the synthetic labels are arange(classes).repeat_interleave(ipc)
        assert labels[rows].tolist() == torch.arange(classes).repeat_interleave(ipc).tolist()


def test_kmeans_subset_with_one_image_per_class_is_the_one_nearest_the_mean():
    images = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0, 15.0]).view(6, 1, 1, 1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert kmeans_real(images, labels, 1, 2, seed=0).tolist() == [1, 4]


def test_ipc_below_one_or_above_the_class_size_names_the_key():
    labels = torch.arange(3).repeat(4)
    with pytest.raises(ConfigError, match="protocol.ipc"):
        random_real(labels, 0, 3, torch.Generator())
    with pytest.raises(ConfigError, match="lower protocol.ipc"):
        random_real(labels, 5, 3, torch.Generator())


# ---- runs on digits ---------------------------------------------------------------------------

NET = ["backbone.width=8", "backbone.depth=2", "backbone.readout=2"]
EXPERTS = ["protocol=experts", "dataset=digits", *NET, "protocol.num_experts=2",
           "trainer.epochs=3", "trainer.batch_size=128", "trainer.progress=false"]
DISTILL = ["protocol=distill", "dataset=digits", *NET, "protocol.ipc=1",
           "protocol.syn_steps=3", "protocol.expert_epochs=1", "protocol.max_start_epoch=2",
           "protocol.iterations=4", "protocol.checkpoint_every=2", "protocol.log_every=1",
           "protocol.lr_img=10", "protocol.num_eval=1", "trainer.epochs=2",
           "trainer.eval_every=1", "trainer.progress=false"]


@pytest.fixture(scope="module")
def experts_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    train(make_cfg(*EXPERTS, "protocol.smooth=true"), root)
    return root


def kept_weights(expert_dir):
    return [load_checkpoint(p)["model"] for p in sorted((expert_dir / "checkpoints").glob(
        "epoch_*.pt"))]


def test_experts_keep_every_epoch_and_report_their_parameter_change(experts_dir):
    results = json.loads((experts_dir / "results.json").read_text())
    assert results["protocol"] == "experts" and results["status"] == "completed"
    section = results["experts"]
    assert section["num_experts"] == 2 and section["smooth"] is True
    assert len(section["param_change"]) == 3 and all(c > 0 for c in section["param_change"])
    for k in range(2):
        assert len(kept_weights(experts_dir / f"expert_{k:03d}")) == 4  # epochs 0..3
    # the two experts start from different weights
    first = [kept_weights(experts_dir / f"expert_{k:03d}")[0] for k in range(2)]
    assert not torch.equal(first[0]["stem.0.weight"], first[1]["stem.0.weight"])


def test_experts_kept_checkpoints_resume_exactly(experts_dir, tmp_path, monkeypatch):
    import mixbench.engine.fit as fit

    real_epoch, calls = fit.train_one_epoch, iter(range(100))

    def killed(*args, **kwargs):  # inside the second expert's second epoch
        if next(calls) == 4:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    cfg = make_cfg(*EXPERTS, "protocol.smooth=true")
    monkeypatch.setattr(fit, "train_one_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path)
    monkeypatch.setattr(fit, "train_one_epoch", real_epoch)
    with pytest.raises(RunExistsError, match="trainer.resume=true"):
        train(cfg, tmp_path)
    train(make_cfg(*EXPERTS, "protocol.smooth=true", "trainer.resume=true"), tmp_path)
    for k in range(2):
        full = kept_weights(experts_dir / f"expert_{k:03d}")
        resumed = kept_weights(tmp_path / f"expert_{k:03d}")
        assert len(full) == len(resumed) == 4
        for a, b in zip(full, resumed):
            for name in a:
                assert torch.equal(a[name], b[name]), (k, name)


def test_distillation_runs_evaluates_and_resumes_to_the_same_images(experts_dir, tmp_path,
                                                                    monkeypatch):
    import mixbench.protocols.distill as distill

    # the loss is logged every 3 iterations and saved every 2: a resume inside a window
    overrides = [*DISTILL, f"protocol.experts={experts_dir}", "protocol.baselines=[random]",
                 "protocol.log_every=3"]
    full = train(make_cfg(*overrides), tmp_path / "full")
    section = full["distill"]
    assert full["protocol"] == "distill" and full["status"] == "completed"
    for key in ("syn_top1", "syn_ece", "syn_best_top1", "random_top1", "syn_lr"):
        assert isinstance(section[key], float), key
    # the best epoch's top-1 (the history's, summed in float32 on the device) is at least the
    # final one (the evaluation's, in float64)
    assert section["syn_best_top1"] >= section["syn_top1"] - 1e-6
    assert [r["iteration"] for r in full["history"]] == [3, 4]
    assert (tmp_path / "full" / "synthetic.png").is_file()
    synthetic = load_checkpoint(tmp_path / "full" / "synthetic.pt")
    assert synthetic["images"].shape == (10, 1, 8, 8)
    assert synthetic["labels"].tolist() == list(range(10))

    real, calls = distill.match_trajectory, iter(range(100))

    def killed(*args, **kwargs):  # iteration 3, after the checkpoint of iteration 2
        if next(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(distill, "match_trajectory", killed)
    no_eval = [*overrides, "protocol.num_eval=0"]
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg(*no_eval), tmp_path / "killed")
    monkeypatch.setattr(distill, "match_trajectory", real)
    resumed = train(make_cfg(*no_eval, "trainer.resume=true"), tmp_path / "killed")
    again = load_checkpoint(tmp_path / "killed" / "synthetic.pt")
    assert torch.equal(again["images"], synthetic["images"])
    assert again["lr"] == synthetic["lr"]
    assert resumed["history"] == full["history"]


def test_ast_student_options_reach_the_matching_and_the_init(experts_dir, tmp_path,
                                                              monkeypatch):
    """Each AST option set in the config is the one each iteration's matching runs with, and
    init=representative picks the images through AST's selection."""
    from mixbench.protocols import distill

    seen, picked = [], []
    real_match, real_pick = distill.match_trajectory, distill.representative

    def match(*args, **kwargs):
        seen.append((kwargs["options"], kwargs["batch_size"]))
        return real_match(*args, **kwargs)

    def pick(*args, **kwargs):
        picked.append(args[3])  # ipc
        return real_pick(*args, **kwargs)

    monkeypatch.setattr(distill, "match_trajectory", match)
    monkeypatch.setattr(distill, "representative", pick)
    results = train(make_cfg(*DISTILL, f"protocol.experts={experts_dir}",
                             "protocol.init=representative", "protocol.student_momentum=0.9",
                             "protocol.balanced_loss=true", "protocol.intermediate=adaptive",
                             "protocol.expert_epochs=2", "protocol.max_start_epoch=1",
                             "protocol.weight_perturb=true", "protocol.batch_syn=5",
                             "protocol.num_eval=0", "protocol.iterations=2"), tmp_path)
    assert results["status"] == "completed" and len(results["history"]) == 2
    ast = StudentOptions(momentum=0.9, balanced_loss=True, intermediate="adaptive",
                         weight_perturb=True)
    assert seen == [(ast, 5), (ast, 5)]
    assert picked == [1]


def test_mixup_trains_the_evaluation_networks(experts_dir, tmp_path, monkeypatch):
    """+method=mixup mixes the batches the evaluation networks train on (the distilled set's
    and each baseline's), and nothing during distillation itself."""
    from mixbench.registry import METHODS

    mixup = METHODS.get("mixup")
    real_mix, calls = mixup.mix_batch, []

    def mix(self, x, y):
        calls.append(len(x))
        return real_mix(self, x, y)

    monkeypatch.setattr(mixup, "mix_batch", mix)
    results = train(make_cfg(*DISTILL, f"protocol.experts={experts_dir}", "+method=mixup",
                             "protocol.iterations=1", "protocol.num_eval=0"), tmp_path / "a")
    assert results["status"] == "completed" and calls == []
    results = train(make_cfg(*DISTILL, f"protocol.experts={experts_dir}", "+method=mixup",
                             "protocol.iterations=1", "protocol.baselines=[kmeans]"),
                    tmp_path / "b")
    assert "kmeans_top1" in results["distill"]
    assert calls and all(n <= 10 for n in calls)  # batches of the 10-image sets


def test_user_mistakes_name_the_fix(experts_dir, tmp_path):
    with pytest.raises(ConfigError, match="protocol.experts is not set"):
        train(make_cfg(*DISTILL), tmp_path / "unset")
    with pytest.raises(ConfigError, match="no experts found at protocol.experts"):
        train(make_cfg(*DISTILL, f"protocol.experts={tmp_path / 'nothing'}"), tmp_path / "a")
    plain = tmp_path / "plain_run"
    train(make_cfg("dataset=digits", "trainer.epochs=1", "trainer.progress=false"), plain)
    with pytest.raises(ConfigError, match="kept no epochs"):
        train(make_cfg(*DISTILL, f"protocol.experts={plain}"), tmp_path / "b")
    with pytest.raises(ConfigError, match="ipc"):
        train(make_cfg(*DISTILL, f"protocol.experts={experts_dir}", "protocol.ipc=0"),
              tmp_path / "c")
    with pytest.raises(ConfigError, match="beyond the experts' trajectories"):
        train(make_cfg(*DISTILL, f"protocol.experts={experts_dir}",
                       "protocol.max_start_epoch=5"), tmp_path / "d")
    with pytest.raises(ConfigError, match="backbone"):
        train(make_cfg(*DISTILL, f"protocol.experts={experts_dir}", "backbone.width=16"),
              tmp_path / "e")
    mixed = tmp_path / "mixed"
    shutil.copytree(experts_dir, mixed / "smooth")
    train(make_cfg(*EXPERTS, "protocol.num_experts=1"), mixed / "plain")
    with pytest.raises(ConfigError, match="different kinds.*protocol.smooth"):
        train(make_cfg(*DISTILL, f"protocol.experts={mixed}"), tmp_path / "g")
    with pytest.raises(ConfigError, match="keep_every must be 1"):
        train(make_cfg(*EXPERTS, "trainer.keep_every=2"), tmp_path / "f")


def test_leaderboard_has_a_distillation_table_with_the_published_numbers(experts_dir,
                                                                         tmp_path, capsys):
    import sys

    import pandas as pd

    sys.path.insert(0, str(ROOT / "tools"))
    import leaderboard

    runs = tmp_path / "runs"
    train(make_cfg(*DISTILL, f"protocol.experts={experts_dir}", "protocol.iterations=1",
                   "protocol.baselines=[random]"), runs / "distill")
    published = pd.read_csv(ROOT / "benchmarks" / "reference" / "mtt_distill.csv")
    assert published.set_index(["dataset", "protocol.ipc"])["syn_top1"].to_dict() == {
        ("cifar10", 1): 46.3, ("cifar10", 10): 65.3, ("cifar10", 50): 71.6,
        ("cifar100", 1): 24.3, ("cifar100", 10): 40.1, ("cifar100", 50): 47.7}
    reference = tmp_path / "ref.csv"
    reference.write_text("dataset,backbone,protocol.ipc,syn_top1,source\n"
                         "digits,convnet,1,12.5,a test\ndigits,convnet,10,99.0,a test\n")
    assert leaderboard.main([str(runs), "--compare-to", str(reference)]) == 0
    text = (runs / "leaderboard.md").read_text()
    assert "## distill · classification" in text
    assert "distilled top-1 %" in text and "published distilled top-1 %" in text
    assert "12.50" in text and "99.00" not in text  # matched on dataset and IPC


def test_benchmark_loops_agree_and_the_script_runs(capsys):
    from benchmarks.distill import Reparam, main, official_style, ours

    net = tiny_net(torch.float64)
    images, labels = tiny_set(torch.float64)
    layout = ParamLayout.of(net)
    start = flatten(p.detach() for p in net.parameters())
    lr = torch.tensor(0.1, dtype=torch.float64)
    torch.testing.assert_close(ours(net, layout, start, images, labels, lr, 3),
                               official_style(Reparam(net), start, images, labels, lr, 3))
    assert main(["--steps", "1", "2", "--ipc", "1", "--width", "4", "--size", "16",
                 "--repeats", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("| ours |") == 2 and out.count("| official-style |") == 2


@pytest.mark.parametrize("preset", sorted(
    p.stem for pattern in ("distill_*.yaml", "experts_*.yaml")
    for p in (CONFIG_DIR / "experiment").glob(pattern)))
def test_every_distillation_preset_composes_and_builds(preset):
    from mixbench.components import DATASETS  # noqa: F401  (registration)
    from mixbench.registry import PROTOCOLS

    cfg = make_cfg(f"experiment={preset}")
    assert cfg.backbone.name == "convnet"
    protocol = PROTOCOLS.build(cfg.protocol)
    assert protocol.name in ("distill", "experts")
    if protocol.name == "distill":
        assert cfg.protocol.experts and cfg.protocol.ipc >= 1


def test_study_plan_runs_experts_first_and_every_component_alone(tmp_path):
    from mixbench.distill.study import COMPONENTS, plan

    runs = plan(tmp_path, ["digits"], [1, 10], [0, 1, 2])
    assert [what for what, _, _ in runs[:2]] == ["digits plain experts",
                                                 "digits smooth experts"]
    distills = runs[2:]
    assert len(distills) == 2 * 3 * (2 + len(COMPONENTS))
    for _, overrides, run_dir in distills:
        tag = next(o.split("=", 1)[1] for o in overrides if o.startswith("tag="))
        experts = next(o for o in overrides if o.startswith("protocol.experts="))
        assert experts.endswith("plain" if tag == "mtt_plain" else "smooth")
        assert run_dir.parts[-2] == tag
        extra = COMPONENTS.get(tag, [])
        assert all(o in overrides for o in extra)
        others = [o for t, opts in COMPONENTS.items() if t != tag for o in opts]
        assert not any(o in overrides for o in others)  # one component at a time


def test_study_smooth_experts_take_asts_lr_ratio_and_plain_ones_do_not(tmp_path):
    """AST trains its experts at 0.3x MTT's lr (0.003 with momentum against 0.01 without):
    the study's smooth experts take 0.3x its plain experts' lr, and the protocol's default is
    AST's 0.003."""
    from mixbench.distill.study import SETTINGS, plan

    for name in SETTINGS:
        (_, plain, _), (_, smooth, _) = plan(tmp_path, [name], [1], [0])[:2]
        lr = float(next(o for o in plain if o.startswith("optimizer.lr=")).split("=")[1])
        smooth_lr = [o for o in smooth if o.startswith("protocol.smooth_optimizer.lr=")]
        assert not any(o.startswith("protocol.smooth_optimizer.lr=") for o in plain)
        assert len(smooth_lr) == 1
        assert float(smooth_lr[0].split("=")[1]) == pytest.approx(0.3 * lr)
    assert make_cfg("protocol=experts").protocol.smooth_optimizer.lr == pytest.approx(0.003)


def test_zca_whitens_every_split_with_the_training_splits_statistics():
    from mixbench.components import DATASETS
    from mixbench.distill.trajectories import prepared_data

    bundle = DATASETS.build({"name": "digits"})
    plain, white = prepared_data(bundle), prepared_data(bundle, zca=True)
    for name in ("train", "val", "test"):
        a, b = plain.splits()[name], white.splits()[name]
        assert a.x.dtype == b.x.dtype == torch.float32 and a.x.shape == b.x.shape
        assert torch.equal(a.y, b.y)
    assert white.mean == (0.0,) and white.std == (1.0,)

    def mean_abs_correlation(x):
        c = torch.corrcoef(x.flatten(1).T.double())
        c = torch.nan_to_num(c)  # constant border pixels
        return (c - torch.diag(torch.diag(c))).abs().mean()

    assert mean_abs_correlation(white.train.x) < 0.5 * mean_abs_correlation(plain.train.x)


def test_make_experts_trains_them_first_once(tmp_path):
    folder = tmp_path / "experts"
    overrides = [*DISTILL, f"protocol.experts={folder}", "protocol.num_eval=0",
                 "protocol.iterations=1", "protocol.expert_epochs=1",
                 "protocol.max_start_epoch=1",
                 "protocol.make_experts={protocol: {num_experts: 1}, "
                 "trainer: {epochs: 2, batch_size: 128}}"]
    results = train(make_cfg(*overrides), tmp_path / "first")
    assert results["distill"]["experts"] == 1
    experts = json.loads((folder / "results.json").read_text())
    assert experts["status"] == "completed" and experts["seed"] == 0
    assert experts["config"]["protocol"]["name"] == "experts"
    assert len(list((folder / "expert_000" / "checkpoints").glob("epoch_*.pt"))) == 3
    stamp = (folder / "expert_000" / "last.pt").stat().st_mtime_ns
    train(make_cfg(*overrides, "seed=1"), tmp_path / "second")  # another seed: the same experts
    assert (folder / "expert_000" / "last.pt").stat().st_mtime_ns == stamp


def test_the_study_tables_are_the_leaderboards_summary_of_the_runs(tmp_path):
    from mixbench.distill.study import distill_tables

    for seed, top1 in ((0, 0.5), (1, 0.7)):
        folder = tmp_path / "distill" / f"seed{seed}"
        folder.mkdir(parents=True)
        record = {"config": {"dataset": {"name": "digits"}, "backbone": {"name": "convnet"},
                             "protocol": {"name": "distill", "ipc": 1}, "tag": "mtt_plain"},
                  "protocol": "distill", "task": "classification", "seed": seed,
                  "status": "completed",
                  "distill": {"syn_top1": top1, "syn_ece": 0.1, "syn_best_top1": top1,
                              "random_top1": 0.3, "kmeans_top1": 0.4}}
        (folder / "results.json").write_text(json.dumps(record))
    text = distill_tables(tmp_path)
    assert "#### digits, IPC 1" in text
    row = next(line for line in text.splitlines() if line.startswith("| mtt_plain"))
    assert "60.0 ± 10.0" in row and "30.0 ± 0.0" in row and "40.0 ± 0.0" in row
