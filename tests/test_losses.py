"""Cross-entropy, BCE, focal and Decoupled Mixup losses against hand-computed values."""
import math

import pytest
import torch

from mixbench.errors import ConfigError
from mixbench.losses import CrossEntropy
from mixbench.components import LOSSES


def build(name, **kwargs):
    return LOSSES.build({"name": name, **kwargs})


def test_cross_entropy_of_soft_targets_with_smoothing_hand_computed():
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    target = torch.softmax(torch.randn(5, 4), 1)
    log_p = torch.log_softmax(logits, 1)
    assert build("soft_ce")(logits, target).item() == \
        pytest.approx(-(target * log_p).sum(1).mean().item(), rel=1e-6)
    smoothed = 0.9 * target + 0.1 / 4
    assert build("label_smoothing")(logits, target).item() == \
        pytest.approx(-(smoothed * log_p).sum(1).mean().item(), rel=1e-6)
    labels = torch.tensor([0, 3, 1, 1, 2])
    assert build("soft_ce")(logits, labels).item() == pytest.approx(
        build("soft_ce")(logits, torch.nn.functional.one_hot(labels, 4).float()).item())
    with pytest.raises(ValueError, match="do not match"):
        build("soft_ce")(logits, target[:, :3])
    with pytest.raises(ConfigError, match="loss.label_smoothing"):
        build("soft_ce", label_smoothing=1.0)


def test_bce_hand_computed():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # sigmoids 0.5 and 0.75
    target = torch.tensor([[1.0, 0.0]])
    # mean over the two classes of -log 0.5 and -log 0.25
    assert build("bce")(logits, target).item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    # smoothing 0.2 on K=2: targets 0.9 / 0.1 (timm's on/off values)
    smoothed = (math.log(2) - (0.1 * math.log(0.75) + 0.9 * math.log(0.25))) / 2
    assert build("bce", label_smoothing=0.2)(logits, target).item() == pytest.approx(smoothed)
    # integer labels are one-hot rows
    assert build("bce")(logits, torch.tensor([0])).item() == pytest.approx(1.5 * math.log(2))


def test_bce_target_threshold_makes_both_mixed_classes_positive():
    logits = torch.zeros(1, 3)
    loss = build("bce", target_threshold=0.2)(logits, torch.tensor([[0.7, 0.3, 0.0]]))
    # targets (1, 1, 0) against sigmoid 0.5 everywhere: log 2 each
    assert loss.item() == pytest.approx(math.log(2))
    low = torch.tensor([[5.0, 5.0, -5.0]])
    assert build("bce", target_threshold=0.2)(low, torch.tensor([[0.7, 0.3, 0.0]])) < 0.01


def test_focal_hand_computed_and_gamma_zero_is_soft_ce():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (0.25, 0.75)
    target = torch.tensor([[1.0, 0.0]])
    assert build("focal", gamma=2.0)(logits, target).item() == \
        pytest.approx(0.75 ** 2 * math.log(4))
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    soft = torch.softmax(torch.randn(6, 5), 1)
    assert build("focal", gamma=0.0)(logits, soft).item() == \
        pytest.approx(CrossEntropy()(logits, soft).item(), rel=1e-6)


def test_decoupled_equals_soft_ce_when_eta_is_zero():
    torch.manual_seed(1)
    logits = torch.randn(8, 6)
    lam = 0.3
    y = torch.nn.functional.one_hot(torch.randint(0, 6, (8,)), 6).float()
    mixed = lam * y + (1 - lam) * y.roll(1, 0)
    assert build("decoupled", eta=0.0)(logits, mixed).item() == \
        pytest.approx(CrossEntropy()(logits, mixed).item(), rel=1e-6)
    assert build("decoupled", eta=0.1)(logits, mixed).item() > \
        CrossEntropy()(logits, mixed).item()


def test_decoupled_hand_computed():
    logits = torch.zeros(2, 3)
    target = torch.tensor([[0.7, 0.3, 0.0],    # mixed: each class competes with class 2 only
                           [1.0, 0.0, 0.0]])   # not mixed: plain CE
    eta = 0.5
    per_row = [math.log(3) + eta * (0.7 + 0.3) * math.log(2),
               math.log(3) + eta * math.log(3)]
    loss = build("decoupled", eta=eta)(logits, target)
    assert loss.item() == pytest.approx(sum(per_row) / 2)


def test_decoupled_partner_logit_does_not_count():
    # Raising the partner's logit changes the CE term but not the decoupled terms.
    target = torch.tensor([[0.6, 0.4, 0.0]])
    dm, ce = build("decoupled", eta=1.0), CrossEntropy()
    a = torch.tensor([[1.0, 0.0, -1.0]])
    a_hi = a.clone()
    a_hi[0, 1] += 3.0  # class b's logit, hidden from class a's term
    extra = lambda z: (dm(z, target) - ce(z, target)).item()  # noqa: E731
    term_a = lambda z: -torch.log_softmax(z[:, [0, 2]], 1)[0, 0].item()  # noqa: E731
    term_b = lambda z: -torch.log_softmax(z[:, [1, 2]], 1)[0, 0].item()  # noqa: E731
    assert extra(a) == pytest.approx(0.6 * term_a(a) + 0.4 * term_b(a), rel=1e-6)
    assert extra(a_hi) == pytest.approx(0.6 * term_a(a_hi) + 0.4 * term_b(a_hi), rel=1e-6)
    assert term_a(a_hi) == pytest.approx(term_a(a))


@pytest.mark.parametrize("name,kwargs,key", [
    ("bce", {"label_smoothing": 1.0}, "loss.label_smoothing"),
    ("bce", {"target_threshold": 1.5}, "loss.target_threshold"),
    ("focal", {"gamma": -1.0}, "loss.gamma"),
    ("decoupled", {"eta": -0.1}, "loss.eta"),
])
def test_bad_values_name_the_key(name, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        build(name, **kwargs)


def test_losses_reject_mismatched_targets():
    for name in ("bce", "focal", "decoupled"):
        with pytest.raises(ValueError, match="do not match"):
            build(name)(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("name", ["soft_ce", "label_smoothing", "bce", "focal", "decoupled"])
def test_class_indices_are_one_hot_rows_and_never_wait_for_the_device(name):
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    rows = torch.nn.functional.one_hot(labels, 4).float()
    assert build(name)(logits, labels).item() == pytest.approx(build(name)(logits, rows).item(),
                                                               rel=1e-6)
    # on the meta device a read of a device value on the host (.item(), boolean masks) raises
    loss = build(name)(logits.to("meta"), labels.to("meta"))
    assert loss.device.type == "meta" and loss.dim() == 0


def test_erm_gives_the_loss_class_indices_with_the_gradients_of_one_hot_rows():
    from mixbench.components import METHODS

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, labels = torch.randn(8, 5), torch.randint(0, 3, (8,))
    seen = []

    def loss_fn(logits, target):
        seen.append(target)
        return torch.nn.functional.cross_entropy(logits, target)

    erm = METHODS.build({"name": "erm"}, num_classes=3)
    erm.step(model, (x, labels), loss_fn).loss.backward()
    assert seen[0] is labels
    by_index = model.weight.grad.clone()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), erm.targets(labels, x.dtype)).backward()
    assert torch.equal(model.weight.grad, by_index)
