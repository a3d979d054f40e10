"""Co-Mixup (Kim et al., ICLR 2021), as the authors' code (snu-mllab/Co-Mixup) runs it on
CIFAR-100. OpenMixup lists Co-Mixup in its CIFAR-100 table (α=2) with the paper's numbers;
it has no implementation of its own, so this follows the authors' code and their CIFAR-100
command line.

Per step:
1. Saliency: the input gradient of the clean loss, √(mean over channels of grad²), in train
   mode; that clean loss is also trained on (weight ``clean_weight``, see below).
2. Compatibility: the l1 distance between the positions of each image's most salient 8×8
   window; A = (1-ω)·I + ω·(distances normalised to mean 1 within a partition).
3. The batch is cut into partitions of ``partition`` images. Per partition, as many outputs
   as inputs are labelled on an n×n grid (n = ``block_num``; each block takes one input, or
   ½ and ½ of two or three inputs the output already uses) by minimising
   Σ cost + label smoothness β + supermodular diversity γ over ``niter`` rounds of
   per-output graph cuts (gco's alpha-beta swap), the cost being −(normalised block
   saliency) − η·log(Dirichlet(α) prior weight of each input), and the diversity term
   modularised with a hard threshold τ·n² on A·(the other outputs' use of each input).
   Outputs that end up using the same inputs are pushed apart before the last round.
4. Each output is the blocks of its inputs; its target the inputs' labels weighted by the
   blocks they own.

The loss: ``loss_fn``(mixed) + ``clean_weight``·CE(clean). The authors train with BCE on the
softmax (a mean over the K classes) and add 2·clean_lam/K·CE(clean) with clean_lam=1, so the
clean term weighs 2 against the mixed term in CE units: ``clean_weight`` 2 with mixbench's
soft CE."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mixbench.errors import ConfigError
from mixbench.methods.base import Method, StepOutput, check_batch
from mixbench.methods.graphcut import import_gco, input_saliency
from mixbench.methods.model_access import require_image_classification
from mixbench.registry import METHODS

SOFT_PAIRS = ((0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5))  # ½–½ blends of 3 inputs


def compatibility(saliency: torch.Tensor, window: int = 8) -> torch.Tensor:
    """B×B l1 distance between the (row, col) of each image's most salient window."""
    window = min(window, *saliency.shape[-2:])
    z = F.avg_pool2d(saliency[:, None], kernel_size=window, stride=1)[:, 0]
    flat = z.flatten(1).argmax(1)
    pos = torch.stack([flat // z.shape[-1], flat % z.shape[-1]], 1).float()
    return (pos[:, None] - pos[None]).abs().sum(-1)


def objective(cost: torch.Tensor, onehot: torch.Tensor, beta: float, gamma: float):
    """Σ cost·z + β/2·(label changes between neighbours) + γ·(pairs of outputs sharing
    inputs), the labelling z being n_out×h×w×n_in (the authors' obj_fn)."""
    n_out, h, w, n_in = onehot.shape
    counts = onehot.reshape(n_out, h * w, n_in).sum(1)
    value = (cost.permute(1, 2, 0)[None] * onehot).sum()
    value = value + beta / 2 * (((onehot[:, :-1] - onehot[:, 1:]) ** 2).sum()
                                + ((onehot[:, :, :-1] - onehot[:, :, 1:]) ** 2).sum())
    return value + gamma * ((counts.sum(0) ** 2).sum() - (counts ** 2).sum())


def resolve_cost(assigned: torch.Tensor) -> torch.Tensor:
    """n_out×n_in extra cost: for each pair of outputs using exactly the same (several)
    inputs, the first loses its first input, the second its second."""
    add = torch.zeros_like(assigned)
    same = (assigned[:, None] - assigned[None]).abs().sum(-1).clamp(max=1.0)
    pairs = torch.triu(1.0 - same, diagonal=1).nonzero().tolist()
    for i1, i2 in pairs:
        used = assigned[i1].nonzero().flatten()
        if len(used) > 1:
            add[i1, used[0]] = 1.0
            add[i2, used[1]] = 1.0
    return add


def _grid_cut(gco, unary: np.ndarray, beta: float, extra: int = 0,
              extra_of: np.ndarray | None = None) -> np.ndarray:
    """Labels h×w minimising unary + β·(label distance) over 4-neighbours; ``extra`` blend
    labels appended (1 or 3) sit at distance 0.25 from the inputs they blend."""
    h, w, n = unary.shape
    pairwise = np.ones((n, n), dtype=np.float32) - np.eye(n, dtype=np.float32)
    if extra == 1:
        pairwise[-1, :-1][extra_of] = 0.25
        pairwise[:-1, -1][extra_of] = 0.25
    elif extra == 3:
        near = np.array([[0.25, 0.25, 1], [0.25, 1, 0.25], [1, 0.25, 0.25]], dtype=np.float32)
        pairwise[-3:, :-3][:, extra_of] = near
        pairwise[:-3, -3:][extra_of, :] = near
    cost_v = beta * np.ones((h - 1, w), dtype=np.float32)
    cost_h = beta * np.ones((h, w - 1), dtype=np.float32)
    return gco.cut_grid_graph(np.ascontiguousarray(unary), pairwise, cost_v, cost_h,
                              algorithm="swap")


def label_output(gco, cost: torch.Tensor, counts: torch.Tensor, beta: float,
                 first_round: bool) -> torch.Tensor:
    """One output's labelling h×w×n_in (the authors' graphcut_wrapper): after the first
    round, an output using 2 inputs may also blend them ½–½, one using 3 or more may blend
    any two of its 3 most used (the blend's cost: the mean of theirs − 5e-4)."""
    h, w, n_in = cost.shape
    device = cost.device
    used = counts > 0
    n_used = 0 if first_round else int(used.sum())
    if n_used == 2:
        blend = cost[:, :, used].mean(-1, keepdim=True) - 5e-4
        labels = _grid_cut(gco, torch.cat([cost, blend], -1).cpu().numpy(), beta, 1,
                           used.cpu().numpy())
        onehot = F.one_hot(torch.as_tensor(labels, device=device).long(), n_in + 1).float()
        onehot = onehot.reshape(h, w, n_in + 1)
        half = torch.zeros(1, 1, n_in, device=device)
        half[:, :, used] = 0.5
        return onehot[:, :, :n_in] + onehot[:, :, n_in:] * half
    if n_used >= 3:
        soft = torch.tensor(SOFT_PAIRS, device=device)
        top = torch.zeros_like(used)
        top[torch.topk(counts, k=3).indices] = True
        blend = cost[:, :, top] @ soft - 5e-4
        labels = _grid_cut(gco, torch.cat([cost, blend], -1).cpu().numpy(), beta, 3,
                           top.cpu().numpy())
        onehot = F.one_hot(torch.as_tensor(labels, device=device).long(), n_in + 3).float()
        onehot = onehot.reshape(h, w, n_in + 3)
        mix = torch.zeros(3, n_in, device=device)
        mix[:, top] = soft
        return onehot[:, :, :n_in] + onehot[:, :, n_in:] @ mix
    labels = _grid_cut(gco, cost.cpu().numpy(), beta)
    return F.one_hot(torch.as_tensor(labels, device=device).long(), n_in).float().reshape(
        h, w, n_in)


def comix_labelling(gco, cost: torch.Tensor, compat: torch.Tensor, *, alpha: float,
                    beta: float, gamma: float, eta: float, thres: float, niter: int,
                    resolve: bool = True) -> torch.Tensor:
    """n×h×w×n labelling of n outputs by n inputs (the authors' get_onehot_matrix with
    thres_type=hard). ``cost``: n_in×h×w (−normalised saliency), ``compat``: A, n_in×n_in."""
    n_in, h, w = cost.shape
    device = cost.device
    cells = h * w
    thres, beta, gamma, eta = thres * cells, beta / cells, gamma / cells, eta / cells
    prior = torch.distributions.Dirichlet(torch.full((n_in,), float(alpha),
                                                     device=device)).sample()
    cost = cost - eta * torch.log(prior.reshape(n_in, 1, 1) + 1e-8)
    n_out = n_in
    idx = torch.randint(n_in, (n_out, w, h), device=device)
    onehot = F.one_hot(idx.reshape(-1), n_in).float().reshape(n_out, h, w, n_in)
    loss_prev = objective(cost, onehot, beta, gamma)
    penalty = onehot.reshape(-1, n_in).sum(0)  # how many blocks use each input
    add_cost = None
    for round_ in range(niter):
        for i in range(n_out):
            counts = onehot[i].reshape(cells, n_in).sum(0)
            penalty = penalty - counts
            shared = compat @ penalty
            # the authors' expression (over * A) @ penalty, in Python's evaluation order
            over = (shared > thres).float()
            modular = 2 * gamma * ((over * compat) @ penalty)
            unary = cost + modular.reshape(-1, 1, 1)
            if add_cost is not None:
                unary = unary + gamma * add_cost[i].reshape(-1, 1, 1)
            onehot[i] = label_output(gco, unary.permute(1, 2, 0), counts, beta, round_ == 0)
            penalty = penalty + onehot[i].reshape(cells, n_in).sum(0)
        if round_ == niter - 2 and resolve:
            assigned = (onehot.reshape(n_out, -1, n_in).sum(1) > 0).float()
            add_cost = resolve_cost(assigned)
        loss = objective(cost, onehot, beta, gamma)
        if ((loss_prev - loss).abs() / loss.abs()).item() < 1e-6:
            break
        loss_prev = loss
    return onehot


def mix_by_labelling(onehot: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """Outputs (n_out×C×H×W) and their targets: each input's labels weighted by its share."""
    n_out, h, w, n_in = onehot.shape
    weights = F.interpolate(onehot.permute(0, 3, 1, 2), size=x.shape[-2:], mode="nearest")
    mixed = (weights.unsqueeze(2) * x.unsqueeze(0)).sum(1)
    targets = (onehot @ y).reshape(n_out, h * w, -1).sum(1)
    return mixed, targets / targets.sum(-1, keepdim=True)


def comixup_batch(x: torch.Tensor, y: torch.Tensor, saliency: torch.Tensor, *, gco,
                  block_num: int = 4, partition: int = 20, alpha: float = 2.0,
                  beta: float = 0.32, gamma: float = 1.0, eta: float = 0.05,
                  thres: float = 0.83, omega: float = 0.001, niter: int = 4,
                  resolve: bool = True):
    """Co-Mixup of a batch: (mixed B×C×H×W, targets B×K, share B×B of each input in each
    output's pixels)."""
    b = x.shape[0]
    with torch.no_grad():
        compat_all = compatibility(saliency.float())
        sal = F.avg_pool2d(saliency[:, None].float(), x.shape[-1] // block_num)[:, 0]
        outs, targets, shares = [], [], torch.zeros(b, b, device=x.device)
        for start in range(0, b, partition):
            part = slice(start, min(start + partition, b))
            s = sal[part]
            n = s.shape[0]
            if n == 1:  # a last partition of one image: nothing to mix it with
                outs.append(x[part])
                targets.append(y[part])
                shares[part, part] = 1.0
                continue
            cost = -s / s.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
            dist = compat_all[part, part]
            total = dist.sum()
            dist = dist / total * n if total > 0 else dist
            compat = (1 - omega) * torch.eye(n, device=x.device) + omega * dist
            onehot = comix_labelling(gco, cost, compat, alpha=alpha, beta=beta, gamma=gamma,
                                     eta=eta, thres=thres, niter=niter, resolve=resolve)
            mixed, target = mix_by_labelling(onehot, x[part], y[part])
            outs.append(mixed)
            targets.append(target)
            shares[part, part] = onehot.mean((1, 2))
        return torch.cat(outs), torch.cat(targets), shares


@METHODS.register("comixup")
class CoMixup(Method):
    """Co-Mixup: each output mixes several inputs by a joint graph-cut labelling; see the
    module docstring."""

    tasks = ("classification",)

    def __init__(self, *, num_classes: int, alpha: float = 2.0, prob: float = 1.0,
                 block_num: int = 4, partition: int = 20, beta: float = 0.32,
                 gamma: float = 1.0, eta: float = 0.05, thres: float = 0.83,
                 omega: float = 0.001, niter: int = 4, resolve: bool = True,
                 clean_weight: float = 2.0):
        super().__init__(num_classes=num_classes)
        if not alpha > 0:
            raise ConfigError(f"method.alpha must be > 0 (Dirichlet(alpha) prior), got {alpha}")
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"method.prob must be in [0, 1], got {prob}")
        if int(block_num) < 2 or int(partition) < 1 or int(niter) < 1:
            raise ConfigError(f"method.block_num must be >= 2, method.partition and "
                              f"method.niter >= 1; got {block_num}, {partition}, {niter}")
        for key, value in (("beta", beta), ("gamma", gamma), ("eta", eta), ("thres", thres),
                           ("clean_weight", clean_weight)):
            if not value >= 0:
                raise ConfigError(f"method.{key} must be >= 0, got {value}")
        if not 0.0 <= omega <= 1.0:
            raise ConfigError(f"method.omega must be in [0, 1], got {omega}")
        self.alpha, self.prob = float(alpha), float(prob)
        self.block_num, self.partition, self.niter = int(block_num), int(partition), int(niter)
        self.beta, self.gamma, self.eta = float(beta), float(gamma), float(eta)
        self.thres, self.omega, self.resolve = float(thres), float(omega), bool(resolve)
        self.clean_weight = float(clean_weight)
        self._gco = import_gco("comixup")

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        require_image_classification(x, labels, "comixup")
        y = self.targets(labels, x.dtype)
        check_batch(x, y, self.num_classes)
        if self.prob < 1.0 and torch.rand(()).item() >= self.prob:
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0})
        h, w = x.shape[-2:]
        if h != w or h % self.block_num:
            raise ConfigError(f"method.block_num={self.block_num} must divide the image side, "
                              f"and the images be square; got {h}×{w}")
        keep_clean = self.clean_weight > 0
        saliency, clean_loss = input_saliency(model, x, y, loss_fn,
                                              train_mode=model.training and keep_clean,
                                              keep_graph=keep_clean)
        mixed, targets, shares = comixup_batch(
            x, y, saliency, gco=self._gco, block_num=self.block_num, partition=self.partition,
            alpha=self.alpha, beta=self.beta, gamma=self.gamma, eta=self.eta,
            thres=self.thres, omega=self.omega, niter=self.niter, resolve=self.resolve)
        logits = model(mixed.to(x.dtype))
        loss = loss_fn(logits, targets.to(y.dtype))
        if keep_clean:
            loss = loss + self.clean_weight * clean_loss
        own = shares.diagonal()
        return StepOutput(loss, logits, {"lam": own, "inputs_per_output":
                                         (shares > 0).sum(1).float().mean()})

    def __repr__(self) -> str:
        return (f"CoMixup(num_classes={self.num_classes}, alpha={self.alpha}, prob={self.prob}, "
                f"block_num={self.block_num}, partition={self.partition}, beta={self.beta}, "
                f"gamma={self.gamma}, eta={self.eta}, thres={self.thres}, omega={self.omega}, "
                f"niter={self.niter}, resolve={self.resolve}, "
                f"clean_weight={self.clean_weight})")

