"""AdaMixUp (Guo, Mao & Zhang, AAAI 2019, "MixUp as Locally Linear Out-of-Manifold
Regularization"): a policy network chooses each pair's mixing range, an intrusion
discriminator on the shared trunk tells mixed samples from real ones.

Per step, with a random pairing ``perm``:

1. the **policy generator** reads the trunk's features of the image and its partner (a
   gradient-free, eval-mode read) and outputs a softmax over three, (α, Δ, γ); the pair's
   λ = α + ε·Δ, ε ~ U(0, 1), so λ lies in [α, α + Δ] ⊆ [0, 1];
2. x̃ = λ·x + (1-λ)·x[perm], ỹ = λ·y + (1-λ)·y[perm] (λ differentiable, per sample);
3. one forward of [x, x̃] through the classifier; the **intrusion discriminator** (a linear
   head on the features entering the classifier's head) labels real samples 1, mixed 0;
4. the joint loss ``loss(f(x), y) + loss(f(x̃), ỹ) + intrusion_weight · CE(D, real/mixed)``
   trains everything: its gradients w.r.t. the generator and the discriminator update them
   inside ``step`` (their own SGD); the trainer's backward of the same loss trains the
   classifier, trunk included. A mixed sample that the discriminator takes for a real one
   (manifold intrusion) raises the loss, so the generator learns to avoid such λ.

The generator and discriminator enter the loss through detached copies of their weights
(``leaf_copies``): their gradients are read off the copies and applied in ``step``, the
graph stays valid for the trainer's backward, and that backward writes only the
classifier's gradients."""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from mixbench.errors import ConfigError
from mixbench.methods.base import StepOutput, check_batch
from mixbench.methods.policy.ema import cosine_lr
from mixbench.methods.policy.learned import LearnedPolicy, PolicyPreview, leaf_copies
from mixbench.registry import METHODS


@contextlib.contextmanager
def captured_head_input(backbone: nn.Module):
    """Collects the features entering ``backbone.head`` during the forwards inside the block
    (a hook: it also sees forwards through a DDP wrapper)."""
    seen: list[torch.Tensor] = []
    handle = backbone.head.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    try:
        yield seen
    finally:
        handle.remove()


@torch.no_grad()
def pair_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features in eval mode (no BatchNorm statistics move), no gradient."""
    was_training = backbone.training
    backbone.eval()
    try:
        return backbone.forward_features(x).flatten(1).float()
    finally:
        backbone.train(was_training)


class PolicyGenerator(nn.Module):
    """(features of x, features of its partner) → softmax (α, Δ, γ)."""

    def __init__(self, num_features: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * num_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 3))

    def forward(self, f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(torch.cat([f_a, f_b], 1)), dim=1)


@METHODS.register("adamixup")
class AdaMixUp(LearnedPolicy):
    name = "adamixup"
    needs = "head"

    def __init__(self, *, num_classes: int, intrusion_weight: float = 1.0, hidden: int = 128,
                 policy_lr: float = 0.1, policy_min_lr: float = 0.0,
                 policy_momentum: float = 0.9, policy_weight_decay: float = 1e-4):
        super().__init__(num_classes=num_classes)
        if not intrusion_weight >= 0:
            raise ConfigError(f"method.intrusion_weight must be >= 0, got {intrusion_weight}")
        if not (isinstance(hidden, int) and hidden >= 1):
            raise ConfigError(f"method.hidden must be a positive integer, got {hidden!r}")
        if not 0 <= policy_min_lr <= policy_lr or policy_lr <= 0:
            raise ConfigError(f"method.policy_lr must be > 0 and >= method.policy_min_lr >= 0, "
                              f"got {policy_lr} and {policy_min_lr}")
        if not policy_weight_decay >= 0:
            raise ConfigError(f"method.policy_weight_decay must be >= 0, got "
                              f"{policy_weight_decay}")
        self.intrusion_weight, self.hidden = float(intrusion_weight), hidden
        self.policy_lr, self.policy_min_lr = float(policy_lr), float(policy_min_lr)
        self.policy_momentum = float(policy_momentum)
        self.policy_weight_decay = float(policy_weight_decay)

    def build_parts(self, backbone, x):
        if not hasattr(backbone, "forward_features"):
            raise ConfigError(f"method={self.name} needs a backbone with forward_features; "
                              f"{type(backbone).__name__} has none")
        num_features = pair_features(backbone, x[:1]).shape[1]
        return {"generator": PolicyGenerator(num_features, self.hidden),
                "discriminator": nn.Linear(num_features, 2)}

    def build_optimizers(self):
        return {name: torch.optim.SGD(self.parts[name].parameters(), lr=self.policy_lr,
                                      momentum=self.policy_momentum,
                                      weight_decay=self.policy_weight_decay)
                for name in ("generator", "discriminator")}

    def policy(self, backbone, x, perm, weights: dict[str, torch.Tensor] | None = None):
        """Per-sample λ = α + ε·Δ (differentiable w.r.t. the generator's ``weights``, its own
        parameters by default) and (α, Δ)."""
        features = pair_features(backbone, x)
        generator = self.parts["generator"]
        alpha_delta_gamma = (generator(features, features[perm]) if weights is None else
                             functional_call(generator, weights, (features, features[perm])))
        alpha, delta = alpha_delta_gamma[:, 0], alpha_delta_gamma[:, 1]
        return alpha + torch.rand_like(alpha) * delta, alpha, delta

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        if labels.is_floating_point():
            raise ConfigError(f"method={self.name} is for classification (integer class "
                              f"labels); this dataset has regression targets")
        y = self.targets(labels, x.dtype)
        check_batch(x, y, self.num_classes)
        backbone = self.ensure_built(model, x)
        b = len(x)
        perm = torch.randperm(b, device=x.device)
        copies = {name: leaf_copies(self.parts[name]) for name in ("generator", "discriminator")}
        lam, alpha, delta = self.policy(backbone, x, perm, copies["generator"])
        weight = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        mixed = weight * x + (1 - weight) * x[perm]
        y_mixed = lam.to(y.dtype)[:, None] * y + (1 - lam.to(y.dtype))[:, None] * y[perm]

        with captured_head_input(backbone) as seen:
            logits = model(torch.cat([x, mixed]))  # clean first: the trainer's accuracy
        if len(seen) != 1:
            raise ConfigError(f"method={self.name} reads the features entering the "
                              f"classifier's head through a hook, which this model hides "
                              f"(trainer.compile=true?): use trainer.compile=false")
        features = seen[0].flatten(1)
        real = (torch.arange(2 * b, device=x.device) < b).long()  # clean 1, mixed 0
        intrusion = F.cross_entropy(functional_call(
            self.parts["discriminator"], copies["discriminator"], (features.float(),)), real)
        loss = (loss_fn(logits[:b], y) + loss_fn(logits[b:], y_mixed)
                + self.intrusion_weight * intrusion)

        lr = cosine_lr(self.policy_lr, self.policy_min_lr, self.progress)
        for name in ("generator", "discriminator"):
            for group in self.optimizers[name].param_groups:
                group["lr"] = lr
            self.update(loss, name, stand_ins=list(copies[name].values()))
        return StepOutput(loss, logits, {"lam": lam.detach(),
                                         "alpha": alpha.detach().mean(),
                                         "delta": delta.detach().mean(),
                                         "intrusion": intrusion.detach()})

    def preview(self, model, x) -> PolicyPreview:
        backbone = self.ensure_built(model, x)
        perm = torch.randperm(len(x), device=x.device)
        with torch.no_grad():
            lam, _, _ = self.policy(backbone, x, perm)
        share = (1 - lam).view(-1, 1, *([1] * (x.dim() - 2))).expand(-1, 1, *x.shape[2:])
        masks = torch.cat([1 - share, share], 1)
        weight = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return PolicyPreview(x, torch.stack([torch.arange(len(x), device=x.device), perm]),
                             masks, weight * x + (1 - weight) * x[perm],
                             [float(lam.mean()), float(1 - lam.mean())])

    def __repr__(self) -> str:
        return (f"AdaMixUp(intrusion_weight={self.intrusion_weight}, hidden={self.hidden}, "
                f"policy_lr={self.policy_lr})")
