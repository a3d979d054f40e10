"""Learned mixing policies (methods that train their own modules): valid mixed samples and
targets, gradients that reach only the module they are meant for, the EMA rule, the extra
state through checkpoints and through a killed-and-resumed run, DDP gradient averaging, and
a clear error for a backbone that lacks what the method needs."""
import copy
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from conftest import (FAST, kill_in_epoch_two, make_cfg, run_tool, steps_that_never_wait,
                      without_timings)

from mixbench.engine.checkpoint import load_checkpoint
from mixbench.app.train import train
from mixbench.errors import CheckpointError, ConfigError
from mixbench.losses import CrossEntropy
from mixbench.tasks import task_for
from mixbench.methods.policy.adaptive_mask import mix_source_targets, mix_sources
from mixbench.methods.policy.ema import cosine_momentum, ema_update_
from mixbench.methods.policy.learned import average_across_ranks
from mixbench.methods.policy.mixblock import mask_loss, mask_variance, rescale_lambda
from mixbench.methods.policy.samix import eta_balanced_cross_entropy
from mixbench.methods.sample_mixing import mix_pairs
from mixbench.methods.policy.preview import preview_run
from mixbench.components import BACKBONES, LOSSES, METHODS

B, K, SIDE = 8, 5, 16
LEARNED = ["automix", "samix", "adautomix", "adamixup"]
GENERATOR = {"automix": "mix_block", "samix": "mix_block",  # the trained extra part
             "adautomix": "generator", "adamixup": "generator"}
TINY = ("backbone.width=8",)


def small_model(**kwargs):
    return BACKBONES.build({"name": "small_cnn", "width": 8, **kwargs}, num_classes=K,
                           in_channels=1)


def batch():
    return torch.randn(B, 1, SIDE, SIDE), torch.arange(B) % K


def build(name, **kwargs):
    return METHODS.build({"name": name, **kwargs}, num_classes=K)


class Recorder:
    """Soft CE that remembers the targets it was given."""

    def __init__(self):
        self.targets, self.ce = [], CrossEntropy()

    def __call__(self, logits, targets):
        self.targets.append(targets.detach())
        return self.ce(logits, targets)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def parameters(module):
    """Trainable weights only (the classifier's own forward moves its BN statistics)."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", LEARNED)
def test_step_gives_logits_and_distribution_targets(name):
    method, model, loss = build(name), small_model(), Recorder()
    out = method.step(model, batch(), loss)
    assert out.logits.shape[1] == K and out.logits.shape[0] in (B, 2 * B, 3 * B)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert loss.targets, "the loss was never called"
    for targets in loss.targets:
        assert targets.shape == (B, K) and (targets >= 0).all()
        torch.testing.assert_close(targets.sum(1), torch.ones(B))


@pytest.mark.parametrize("name", LEARNED)
def test_step_never_waits_for_the_device(name):
    # On meta tensors reading a value on the host raises and HostToDeviceCopies records host
    # data sent to them (see tests/test_methods.py): a step that passes, policy updates
    # included, never waits for its GPU.
    torch.manual_seed(0)
    model = small_model().to("meta")
    x = torch.empty(B, 1, SIDE, SIDE, device="meta")
    labels = torch.empty(B, dtype=torch.long, device="meta")
    outs = steps_that_never_wait(build(name), model, (x, labels), CrossEntropy())
    assert all(out.logits.shape[1] == K for out in outs)


def mix_block_share(name):
    """(method, x, perm, partner's share at λ = 0.3) after one step built the Mix Block."""
    method, model = build(name), small_model()
    x, labels = batch()
    method.step(model, (x, labels), CrossEntropy())
    perm = torch.randperm(B)
    share = method.masks(x, 0.3, perm)
    assert share.shape == (B, 1, SIDE, SIDE) and ((share > 0) & (share < 1)).all()
    return method, x, perm, share


def test_automix_masks_are_shares_of_the_partner():
    _, x, perm, share = mix_block_share("automix")
    mixed = mix_pairs(x, perm, share, of="partner")
    torch.testing.assert_close(mixed, x + share * (x[perm] - x))
    # the L1 mask loss is zero inside the margin and grows with the distance outside it
    assert mask_loss(torch.full((2, 1, 4, 4), 0.7), 0.35, margin=0.1) == 0
    torch.testing.assert_close(mask_loss(torch.full((2, 1, 4, 4), 0.2), 0.3, margin=0.1),
                               torch.tensor(0.4))


def test_samix_masks_are_shares_that_depend_on_lambda():
    method, x, perm, share = mix_block_share("samix")
    assert not torch.allclose(method.masks(x, 0.7, perm), share)  # λ scales the features
    assert method.parts["mix_block"].upsample == "bilinear"
    assert not list(method.parts["mix_block"].buffers())  # no BN statistics to drift apart


def test_samix_lambda_rescaling():
    for k in (0.0, 0.25, 1.0, 10.0):
        assert rescale_lambda(0.0, k) == 0 and rescale_lambda(1.0, k) == pytest.approx(1)
        assert rescale_lambda(0.5, k) == pytest.approx(0.5)
        for lam in (0.1, 0.3):  # symmetric about ½ and pulled towards it
            assert rescale_lambda(1 - lam, k) == pytest.approx(1 - rescale_lambda(lam, k))
            assert lam < rescale_lambda(lam, k) < 0.5
    # hand-computed: k = 0.25, λ = 0.1 → (4/3·0.001 − 0.02 + 0.125) / (0.25 + 1/3)
    assert rescale_lambda(0.1, 0.25) == pytest.approx((0.004 / 3 + 0.105) / (7 / 12))
    assert rescale_lambda(0.1, 1.0) > rescale_lambda(0.1, 10.0)  # larger k: closer to λ
    assert rescale_lambda(0.1, -1) == 0.1


def test_eta_balanced_loss_splits_mixup_ce_into_pair_and_rest():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 0.3, 0.4]])
    target = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    torch.testing.assert_close(eta_balanced_cross_entropy(logits, target, 1.0),
                               CrossEntropy()(logits, target))
    # by hand, row 0: p_pair = softmax over the pair; row 1: one class, no local term
    p = torch.softmax(logits, -1)
    pair = p[0, :2].sum()
    local = -(0.7 * torch.log(p[0, 0] / pair) + 0.3 * torch.log(p[0, 1] / pair))
    expected = (local - 0.5 * torch.log(pair) - 0.5 * torch.log(p[1, 2])) / 2
    torch.testing.assert_close(eta_balanced_cross_entropy(logits, target, 0.5), expected)
    # η = 0: only how the pair shares its probability counts, not the other classes' logits
    moved = logits.clone()
    moved[0, 2:] += torch.tensor([5.0, -3.0])
    torch.testing.assert_close(eta_balanced_cross_entropy(moved[:1], target[:1], 0.0),
                               eta_balanced_cross_entropy(logits[:1], target[:1], 0.0))


def test_samix_mix_block_objective_is_eta_balanced_plus_l1_minus_variance():
    method = build("samix", eta=0.25, mask_loss_weight=0.5, mask_variance_weight=3.0)
    logits, targets = torch.randn(B, K), torch.softmax(torch.randn(B, K), -1)
    share = torch.rand(B, 1, SIDE, SIDE)
    torch.testing.assert_close(mask_variance(share), share.var(unbiased=False))
    assert mask_variance(torch.full((2, 1, 4, 4), 0.5)) == 0
    expected = (eta_balanced_cross_entropy(logits, targets, 0.25)
                + 0.5 * (mask_loss(share, 0.4, 0.1) - 3.0 * mask_variance(share)))
    never = None  # the run's loss is the classifier's: the Mix Block does not use it
    torch.testing.assert_close(method.mix_block_objective(logits, targets, share, 0.4, never),
                               expected)


@pytest.mark.parametrize("name", LEARNED)
def test_generator_update_leaves_the_classifier_alone_and_vice_versa(name):
    method, model = build(name), small_model()
    method.step(model, batch(), CrossEntropy())  # builds the parts
    classifier_before = parameters(model)
    block_before = snapshot(method.parts[GENERATOR[name]])
    out = method.step(model, batch(), CrossEntropy())
    # the Mix Block moved, the classifier did not, and none of its .grad was written
    assert not same(snapshot(method.parts[GENERATOR[name]]), block_before)
    assert same(parameters(model), classifier_before)
    assert all(p.grad is None for p in model.parameters())
    if "ema" in method.parts:  # the EMA copy has no gradients of its own
        assert all(not p.requires_grad for p in method.parts["ema"].parameters())
    # the classifier's loss does not reach the Mix Block: a classifier update cannot move it
    block_params = list(method.parts[GENERATOR[name]].parameters())
    grads = torch.autograd.grad(out.loss, block_params, allow_unused=True, retain_graph=True)
    assert all(g is None for g in grads)
    block_before = snapshot(method.parts[GENERATOR[name]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
    assert not same(parameters(model), classifier_before)
    assert same(snapshot(method.parts[GENERATOR[name]]), block_before)
    assert all(p.grad is None for p in block_params)


def test_adautomix_masks_split_every_pixel_between_the_sources():
    method, model = build("adautomix"), small_model()
    x, labels = batch()
    method.step(model, (x, labels), CrossEntropy())
    lams = [0.5, 0.3, 0.2]
    sources = method.sample_sources(B, x.device)
    assert sources.shape == (3, B) and torch.equal(sources[0], torch.arange(B))
    masks = method.masks(x, lams, sources)
    assert masks.shape == (B, 3, SIDE, SIDE) and (masks > 0).all()
    torch.testing.assert_close(masks.sum(1), torch.ones(B, SIDE, SIDE))
    expected = sum(masks[:, i:i + 1] * x[sources[i]] for i in range(3))
    torch.testing.assert_close(mix_sources(x, sources, masks), expected)
    constant = torch.tensor(lams).view(1, 3, 1, 1).expand(B, -1, 1, 1)
    torch.testing.assert_close(mix_sources(x, sources, constant),
                               sum(lam * x[src] for lam, src in zip(lams, sources)))
    y = torch.eye(K)[labels]
    targets = mix_source_targets(y, sources, lams)
    torch.testing.assert_close(targets.sum(1), torch.ones(B))
    torch.testing.assert_close(targets, sum(lam * y[src] for lam, src in zip(lams, sources)))


@pytest.mark.parametrize("adversarial", [True, False])
def test_adautomix_generator_ascends_the_teacher_loss_on_adversarial_steps(adversarial):
    """β = 1: the adversarial loss is -CE, the cooperative one CE, so one generator step
    raises (lowers) the teacher's loss on the same mixed batch."""
    method = build("adautomix", beta=1.0, generator_lr=0.5, generator_min_lr=0.5,
                   generator_weight_decay=0.0)
    model, ce = small_model(), CrossEntropy()
    x, labels = batch()
    method.step(model, (x, labels), ce)
    method.generator_steps = 0 if adversarial else 1  # adv_interval = 2
    y, lams = torch.eye(K)[labels], [0.5, 0.3, 0.2]
    sources = method.sample_sources(B, x.device)

    def teacher_loss():
        with torch.no_grad():
            mixed = mix_sources(x, sources, method.masks(x, lams, sources))
            return ce(method.parts["ema"](mixed), mix_source_targets(y, sources, lams))

    before = teacher_loss()
    method.train_generator(x, y, lams, sources, ce)
    after = teacher_loss()
    assert (after > before) if adversarial else (after < before)
    assert method.generator_steps == (1 if adversarial else 2)


def test_adamixup_lambda_lies_in_the_policy_range_and_the_loss_trains_both_parts():
    method, model = build("adamixup"), small_model()
    loss = Recorder()
    out = method.step(model, batch(), loss)
    lam = out.info["lam"]
    assert lam.shape == (B,) and ((lam >= 0) & (lam <= 1)).all()  # one λ per pair
    alpha, delta = out.info["alpha"], out.info["delta"]
    assert 0 <= alpha <= 1 and 0 <= delta <= 1 and alpha + delta <= 1
    torch.manual_seed(3)
    x, _ = batch()
    perm = torch.randperm(B)
    with torch.no_grad():
        lam, alpha, delta = method.policy(model, x, perm)
    assert ((lam >= alpha - 1e-6) & (lam <= alpha + delta + 1e-6)).all()
    assert (alpha + delta <= 1 + 1e-6).all()
    # the discriminator and the generator both move on the joint loss
    before = {n: snapshot(p) for n, p in method.parts.items()}
    method.step(model, batch(), loss)
    for name, part in method.parts.items():
        assert not same(snapshot(part), before[name]), name


def test_adamixup_discriminator_learns_to_tell_mixed_from_real():
    torch.manual_seed(0)
    method = build("adamixup", policy_lr=0.5, policy_min_lr=0.5)
    model, ce = small_model(), CrossEntropy()
    x, labels = batch()
    first = method.step(model, (x, labels), ce).info["intrusion"]
    for _ in range(15):
        last = method.step(model, (x, labels), ce).info["intrusion"]
    assert last < first


def test_ema_update_rule_on_a_hand_made_case():
    online = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in online.parameters():
            p.fill_(1.0)
        for p in ema.parameters():
            p.fill_(3.0)
        online[1].running_mean.fill_(7.0)
    ema_update_(ema, online, momentum=0.75)
    for p in ema.parameters():  # 0.75·3 + 0.25·1
        torch.testing.assert_close(p, torch.full_like(p, 2.5))
    torch.testing.assert_close(ema[1].running_mean, torch.full((2,), 7.0))  # buffers copied
    ema_update_(ema, online, momentum=1.0)  # momentum 1 freezes the parameters
    torch.testing.assert_close(ema[0].weight, torch.full((2, 2), 2.5))
    # the momentum schedule: held during warm-up, then a half cosine from base to end
    assert cosine_momentum(0.99, 1.0, 0.05) == 0.99
    assert cosine_momentum(0.99, 1.0, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 1.0, 0.55) == pytest.approx(0.995)


def after_steps(name, steps=2, seed=0):
    torch.manual_seed(seed)
    method, model = build(name), small_model()
    for _ in range(steps):
        method.step(model, batch(), CrossEntropy())
    return method, model


@pytest.mark.parametrize("name", LEARNED)
def test_state_dict_round_trip_restores_every_extra_tensor(name):
    method, model = after_steps(name, steps=3)
    state = method.state_dict()
    assert set(state) == {"parts", "optimizers", "extra"}
    fresh = build(name)
    fresh.load_state_dict(state)  # before the first step: kept until the parts exist
    assert fresh.state_dict() == state
    torch.manual_seed(1)
    fresh.ensure_built(model, batch()[0])
    for part in method.parts:
        assert same(snapshot(fresh.parts[part]), snapshot(method.parts[part]))
    assert fresh.extra_state() == method.extra_state()
    for key, optimizer in method.optimizers.items():
        ours = optimizer.state_dict()["state"]
        theirs = fresh.optimizers[key].state_dict()["state"]
        assert ours.keys() == theirs.keys() and ours  # momentum buffers exist and match
        for i in ours:
            assert torch.equal(ours[i]["momentum_buffer"], theirs[i]["momentum_buffer"])
    # both go on identically (each on its own copy: a step moves the BN statistics)
    outs = []
    for m in (method, fresh):
        torch.manual_seed(7)
        outs.append(m.step(copy.deepcopy(model), batch(), CrossEntropy()).loss)
    assert torch.equal(outs[0], outs[1])


def test_state_from_another_method_is_refused():
    method, _ = after_steps("automix", steps=1)
    state = method.state_dict()
    with pytest.raises(CheckpointError, match="unknown keys"):
        build("automix").load_state_dict({**state, "teacher_sha256": "x"})
    other = build("automix", reduction=1)  # another Mix Block shape
    other.load_state_dict(state)
    with pytest.raises(CheckpointError, match="does not fit"):
        other.step(small_model(), batch(), CrossEntropy())


@pytest.mark.slow
@pytest.mark.parametrize("name", LEARNED)
def test_kill_and_resume_equals_uninterrupted(name, cfg_factory, tmp_path, monkeypatch):
    overrides = (f"+method={name}", *TINY, "trainer.epochs=2", "seed=5")
    full = train(cfg_factory(*overrides), tmp_path / "full")
    kill_in_epoch_two(cfg_factory(*overrides), tmp_path / "killed", monkeypatch)
    resumed = train(cfg_factory(*overrides, "trainer.resume=true"), tmp_path / "killed")

    assert resumed["test"] == full["test"]
    assert without_timings(resumed["history"]) == without_timings(full["history"])
    a, b = (load_checkpoint(d / "last.pt")["method"] for d in (tmp_path / "full",
                                                             tmp_path / "killed"))
    for part in a["parts"]:
        assert same(a["parts"][part], b["parts"][part])


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """A 1-epoch run on digits per learned policy, through the composed Hydra config."""
    base = tmp_path_factory.mktemp("policy_runs")
    return {name: (train(make_cfg(*FAST, f"+method={name}", *TINY), base / name), base / name)
            for name in LEARNED}


@pytest.mark.parametrize("name", LEARNED)
def test_one_epoch_on_digits_keeps_extra_modules_out_of_the_model(name, digits_runs):
    results, run_dir = digits_runs[name]
    assert results["status"] == "completed" and 0 <= results["test"]["top1"] <= 1
    assert results["config"]["method"]["name"] == name
    state = load_checkpoint(run_dir / "last.pt")
    plain = BACKBONES.build({"name": "small_cnn", "width": 8}, num_classes=10, in_channels=1)
    assert set(state["model"]) == set(plain.state_dict())  # the classifier alone
    assert state["method"]["parts"] and state["method"]["optimizers"]


@pytest.mark.slow
@pytest.mark.parametrize("name", LEARNED)
def test_visualize_mix_draws_the_learned_policy_of_a_run(name, digits_runs, tmp_path):
    _, run_dir = digits_runs[name]
    preview, shown = preview_run(run_dir, n=3)
    assert shown == name and preview.x.shape == (3, 1, 8, 8)
    torch.testing.assert_close(preview.masks.sum(1), torch.ones(3, 8, 8))
    n_src = preview.sources.shape[0]
    expected = sum(preview.masks[:, i:i + 1] * preview.x[preview.sources[i]]
                   for i in range(n_src))
    torch.testing.assert_close(preview.mixed, expected)
    result = run_tool("tools/visualize_mix.py", str(run_dir), "--out",
                      str(tmp_path / "grid.png"), "--n", "3")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "grid.png").stat().st_size > 5_000


@pytest.mark.slow
def test_visualize_mix_refuses_a_run_without_a_learned_policy(tmp_path):
    train(make_cfg(*FAST, *TINY), tmp_path)
    result = run_tool("tools/visualize_mix.py", str(tmp_path))
    assert result.returncode == 2
    assert "method=erm" in result.stderr and "automix" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", LEARNED)
def test_backbone_without_what_the_method_reads_is_refused(name):
    if name == "adamixup":  # reads the features entering the head: a bare network has none
        model = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, K))
    else:  # reads a hidden feature map: a timm model is wrapped whole, without stages
        model = BACKBONES.build({"name": "timm", "model_name": "resnet10t"}, num_classes=K,
                                in_channels=1)
    with pytest.raises(ConfigError, match="mixbench's backbones"):
        build(name).step(model, batch(), CrossEntropy())


def test_automix_config_errors():
    with pytest.raises(ConfigError, match="method.feature_layer"):
        build("automix", feature_layer=9).step(small_model(), batch(), CrossEntropy())
    with pytest.raises(ConfigError, match="method.alpha"):
        build("automix", alpha=0)
    with pytest.raises(ConfigError, match="method.momentum"):
        build("automix", momentum=1.5)
    with pytest.raises(ConfigError, match="image batches"):
        build("automix").step(small_model(), (torch.randn(B, 4), torch.arange(B) % K),
                              CrossEntropy())
    regression = task_for(SimpleNamespace(task="regression", name="diabetes"))
    with pytest.raises(ConfigError, match="method=automix is for classification"):
        regression.check(loss_fn=LOSSES.build({"name": "mse"}), method=build("automix"),
                         loss_name="mse", method_name="automix")


def test_samix_config_errors():
    with pytest.raises(ConfigError, match="lam_concat"):
        build("samix", lam_concat=True)
    with pytest.raises(ConfigError, match="eta"):
        build("samix", eta=-0.1)
    with pytest.raises(ConfigError, match="lam_k"):
        build("samix", lam_k=-0.5)
    with pytest.raises(ConfigError, match="mask_variance_weight"):
        build("samix", mask_variance_weight=-1)
    with pytest.raises(ConfigError, match="no option.*bogus.*mix_block_lr"):
        build("samix", bogus=1)


def test_adautomix_config_errors():
    with pytest.raises(ConfigError, match="method.num_sources"):
        build("adautomix", num_sources=1)
    with pytest.raises(ConfigError, match="method.beta"):
        build("adautomix", beta=1.5)
    with pytest.raises(ConfigError, match="method.generator_lr"):
        build("adautomix", generator_lr=0.01, generator_min_lr=0.1)
    with pytest.raises(ConfigError, match="method.feature_layer"):
        build("adautomix", feature_layer=0).step(small_model(), batch(),
                                                 CrossEntropy())


@pytest.mark.parametrize("name", LEARNED)
def test_step_works_under_ddp(name, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        model = DistributedDataParallel(small_model())
        method = build(name)
        for _ in range(2):
            method.step(model, batch(), CrossEntropy()).loss.backward()
    finally:
        dist.destroy_process_group()


def _train_on_rank(rank, store, results):
    """On each of two gloo ranks: the gradient average, then two steps of every learned
    policy through DDP on this rank's own data (the same method seed on both ranks, as the
    trainer does). Spawned, not forked: a fork of a process that has trained may deadlock."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        grads = [torch.full((3,), float(rank + 1)), torch.tensor([10.0 * rank])]
        average_across_ranks(grads)
        out = {"average": [g.tolist() for g in grads]}
        for name in LEARNED:
            torch.manual_seed(0)
            model = DistributedDataParallel(small_model())
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            method = build(name)
            data = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
            for step in range(2):
                torch.manual_seed(step)
                x = torch.randn(B, 1, SIDE, SIDE, generator=data)
                labels = torch.randint(0, K, (B,), generator=data)
                loss = method.step(model, (x, labels), CrossEntropy()).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            out[name] = {part: {k: v.tolist() for k, v in module.state_dict().items()}
                         for part, module in method.parts.items()}
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    store = tmp_path_factory.mktemp("ddp") / "store"
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_train_on_rank, args=(str(store), results), nprocs=2,
                           start_method="spawn")
        return dict(results)


@pytest.mark.slow
def test_gradients_are_averaged_across_ranks(two_ranks):
    assert two_ranks[0]["average"] == two_ranks[1]["average"] == [[1.5, 1.5, 1.5], [5.0]]


@pytest.mark.slow
@pytest.mark.parametrize("name", LEARNED)
def test_parts_stay_identical_on_every_rank(name, two_ranks):
    assert two_ranks[0][name] == two_ranks[1][name]
