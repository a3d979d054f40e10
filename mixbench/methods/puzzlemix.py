"""PuzzleMix (Kim et al., ICML 2020), as the authors' code and OpenMixup run it.

Per step (``variant=official``, the default):
1. Saliency: the input gradient of the clean loss, √(mean over channels of grad²), taken in
   eval mode (BatchNorm statistics untouched) as OpenMixup does; no clean loss term unless
   ``clean_weight`` > 0 (then in train mode, its loss added: the authors' ``clean_lam``).
2. λ ~ Beta(α, α) is the prior of the labelling, and a grid of n×n blocks (n drawn from
   ``block_nums``, OpenMixup's 2**randint(1, block_num=5)) is labelled per image by a graph
   cut (gco's alpha-beta swap): ``n_labels`` levels of the image's own share (3: 1, ½, 0);
   unary = the saliency a block loses (each image's block saliency sums to 1) plus
   ``eta``·(-log binomial prior of the share)/n²; pairwise = label smoothness ``beta``/(16n)
   plus ``gamma`` times the pixel discontinuity across each block border (the images
   undone to pixel values with the dataset's mean and std, averaged over ``neigh_size``).
3. Transport (``transport``): each image's blocks are moved by the authors' iterative
   row/column assignment, cost ``t_eps``·(squared grid distance)/(m-1)² - saliency, on an
   m×m grid of ``t_size``-pixel blocks (or the mask's grid when its blocks are smaller).
4. x̃ = mask·x + (1-mask)·x[perm]; λ = the mask's mean per sample; ỹ = λy + (1-λ)y[perm].

``variant=simplified`` keeps mixbench's earlier form: the k = round((1-λ)·n²) blocks where
the partner's saliency most exceeds the image's own come from the partner (no graph cut: no
smoothness or prior term, binary mask), a cost-free greedy transport in raster order, and a
clean CE term (``clean_weight`` 1 by default). One λ and one n per batch in both."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mixbench.errors import ConfigError
from mixbench.methods.base import MixResult, StepOutput, check_batch
from mixbench.methods.graphcut import import_gco, input_saliency
from mixbench.methods.model_access import require_image_classification
from mixbench.methods.sample_mixing import SampleMixer, mix_targets
from mixbench.registry import METHODS

VARIANTS = ("official", "simplified")


# --- the simplified variant ------------------------------------------------------------
def to_blocks(x: torch.Tensor, n: int) -> torch.Tensor:
    """B×C×H×W → B×n²×C×(H/n)×(W/n), blocks in raster order."""
    b, c, h, w = x.shape
    return (x.reshape(b, c, n, h // n, n, w // n).permute(0, 2, 4, 1, 3, 5)
            .reshape(b, n * n, c, h // n, w // n))


def from_blocks(blocks: torch.Tensor, n: int) -> torch.Tensor:
    b, _, c, bh, bw = blocks.shape
    return blocks.reshape(b, n, n, c, bh, bw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, n * bh,
                                                                              n * bw)


def greedy_transport(positions: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """B×n² source-block index per destination block: the ``positions`` (B×m) get the image's
    m most salient blocks, matched in raster order; every other block stays where it is."""
    m = positions.shape[1]
    identity = torch.arange(saliency.shape[1], device=saliency.device).expand_as(saliency)
    if m == 0:
        return identity
    sources = torch.topk(saliency, m, dim=1).indices.sort(dim=1).values
    return identity.clone().scatter_(1, positions.sort(dim=1).values, sources)


def puzzle_batch(x: torch.Tensor, y: torch.Tensor, saliency: torch.Tensor, lam: float, n: int,
                 transport: bool = True) -> MixResult:
    """Mix each image with a partner block-wise, guided by ``saliency`` (B×H×W)."""
    b, _, h, w = x.shape
    cells = n * n
    k = round((1.0 - lam) * cells)  # blocks taken from the partner
    if k == 0:
        return MixResult(x, y, 1.0)
    perm = torch.randperm(b, device=x.device)
    sal = F.avg_pool2d(saliency[:, None].float(), (h // n, w // n)).flatten(1)  # B×n²
    sal = sal / sal.sum(dim=1, keepdim=True).clamp_min(1e-12)
    partner_sal = sal[perm]
    from_partner = torch.topk(partner_sal - sal, k, dim=1).indices  # B×k
    mask = torch.zeros(b, cells, dtype=torch.bool, device=x.device).scatter_(1, from_partner, True)
    rows = torch.arange(b, device=x.device)[:, None]
    blocks = to_blocks(x, n)
    if transport:
        kept = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices[:, :cells - k]
        own = blocks[rows, greedy_transport(kept, sal)]
        partner = blocks[perm[:, None], greedy_transport(from_partner, partner_sal)]
    else:
        own, partner = blocks, blocks[perm]
    mixed = torch.where(mask[:, :, None, None, None], partner, own)
    lam = 1.0 - k / cells
    return MixResult(from_blocks(mixed, n), mix_targets(y, perm, lam), lam)


# --- the official algorithm --------------------------------------------------------------
def neighbour_penalty(a: torch.Tensor, b: torch.Tensor, k: int):
    """Mean |a - b| across each block border, between a pixel of ``a`` and its lower (x) or
    right (y) neighbour in ``b``: B×(n-1)×n and B×n×(n-1) for images pooled to n·k per side."""
    px = (a[:, :, :-1, :] - b[:, :, 1:, :])[:, :, k - 1::k, :]
    py = (a[:, :, :, :-1] - b[:, :, :, 1:])[:, :, :, k - 1::k]
    return (F.avg_pool2d(px.abs().mean(1), kernel_size=(1, k)),
            F.avg_pool2d(py.abs().mean(1), kernel_size=(k, 1)))


def puzzle_terms(pixels: torch.Tensor, saliency: torch.Tensor, perm: torch.Tensor, n: int, *,
                 beta: float, gamma: float, neigh_size: int):
    """The graph's terms for own image i and partner perm[i] on an n×n grid: (unary of
    keeping the own block, unary of taking the partner's, border weights x, border weights
    y, normalised block saliency B×n×n), as in the authors' code. ``pixels`` are the images
    in pixel values (for the data smoothness term)."""
    b, _, _, width = pixels.shape
    block = width // n
    neigh = min(neigh_size, block)
    pooled = F.avg_pool2d(saliency[:, None].float(), block)[:, 0]
    own_sal = pooled / pooled.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
    own_px = F.avg_pool2d(pixels.float(), neigh)
    partner_px = own_px[perm]
    k = block // neigh
    scale = beta / n / 16 * gamma
    # the border cost by (upper/left block's source, lower/right block's): o own, p partner
    oo = [scale * t for t in neighbour_penalty(own_px, own_px, k)]
    op = [scale * t for t in neighbour_penalty(own_px, partner_px, k)]
    po = [scale * t for t in neighbour_penalty(partner_px, own_px, k)]
    pp = [scale * t for t in neighbour_penalty(partner_px, partner_px, k)]
    # keeping a block costs the partner's saliency there, taking it the image's own; each
    # border's cost goes half to either side's unary, the rest is the edge weight
    keep, take = own_sal[perm].clone(), own_sal.clone()
    for axis in (0, 1):
        first = (slice(None),) * (axis + 1) + (slice(None, -1),)
        second = (slice(None),) * (axis + 1) + (slice(1, None),)
        keep[first] += (op[axis] + oo[axis]) / 2
        take[first] += (po[axis] + pp[axis]) / 2
        keep[second] += (po[axis] + oo[axis]) / 2
        take[second] += (op[axis] + pp[axis]) / 2
    edges = [(op[a] + po[a] - oo[a] - pp[a]) / 2 for a in (0, 1)]
    return keep, take, edges[0], edges[1], own_sal


def share_prior(lam: float, n_labels: int, eps: float = 1e-8) -> np.ndarray:
    """-log P(label) with label l giving the image 1 - l/(n_labels-1) of a block and each of
    the n_labels-1 halves drawn own with probability λ (binomial), e.g. for 3 labels
    -log [λ², 2λ(1-λ), (1-λ)²]."""
    m = n_labels - 1
    return np.array([-math.log(math.comb(m, j) * lam ** (m - j) * (1 - lam) ** j + eps)
                     for j in range(n_labels)])


def graphcut_mask(gco, keep: np.ndarray, take: np.ndarray, edge_x: np.ndarray,
                  edge_y: np.ndarray, lam: float, beta: float, eta: float,
                  n_labels: int) -> np.ndarray:
    """One image's n×n mask of its own share (levels 1, …, 0) by gco's alpha-beta swap.

    The authors scale every term by 1000·n² and round to integers, with the label
    distances (i-j)²/(n_labels-1)² as floats (gco then scales unary and pairwise terms to
    one integer scale). Here the same integers are multiplied by (n_labels-1)², so that the
    label distances are integers too: the same energy up to a constant factor, the same
    labelling, and no int32 overflow when a block holds most of an image's saliency."""
    n = keep.shape[0]
    large = 1000 * n * n
    m2 = (n_labels - 1) ** 2
    prior = eta * share_prior(lam, n_labels) / (n * n)
    shares = np.linspace(0.0, 1.0, n_labels)  # the partner's share of label l
    unary = np.stack([(1 - s) * keep.astype(np.float64) + s * take.astype(np.float64)
                      + prior[i] for i, s in enumerate(shares)], axis=-1)
    unary = (large * unary).astype(np.int32).astype(np.int64) * m2
    labels = np.arange(n_labels)
    pairwise = (labels[:, None] - labels[None]) ** 2
    cost_x = (large * (edge_x.astype(np.float64) + beta)).astype(np.int32)
    cost_y = (large * (edge_y.astype(np.float64) + beta)).astype(np.int32)
    label = gco.cut_grid_graph(unary.astype(np.int32), pairwise.astype(np.int32),
                               cost_x, cost_y, algorithm="swap")
    return 1.0 - label.reshape(n, n) / (n_labels - 1)


def grid_cost(n: int, device=None) -> torch.Tensor:
    """n²×n²: squared grid distance between blocks i and j over (n-1)²."""
    idx = torch.arange(n * n, device=device)
    r, c = idx // n, idx % n
    d = (r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2
    return d.float() / (n - 1) ** 2


def transport_plan(mask: torch.Tensor, saliency: torch.Tensor, eps: float) -> torch.Tensor:
    """B×m²×m² plan (source block, destination block) that moves each image's salient blocks
    into the blocks its ``mask`` (B×1×m×m, > 0: used) shows: the authors' m rounds of every
    source bidding for its cheapest destination, the cheapest bidder winning each, losers'
    bids raised by 1 (cost ``eps``·distance - saliency·used). A destination no source won
    stays empty (zero), as in their code."""
    b, m = mask.shape[0], mask.shape[-1]
    used = (mask > 0).float().reshape(b, 1, m * m)
    cost = eps * grid_cost(m, mask.device)[None] - saliency.reshape(b, m * m, 1) * used
    plan, win, bids = torch.empty_like(cost), torch.zeros_like(cost), torch.empty_like(cost)
    for _ in range(m):
        plan.zero_().scatter_(-1, cost.argmin(-1, keepdim=True), 1.0)
        torch.mul(plan, cost, out=bids)
        win.zero_().scatter_(-2, bids.argmin(-2, keepdim=True), 1.0).mul_(plan)
        cost.add_(plan - win)  # losers' bids + 1 (exact: plan - win is 0 or 1)
    return win


def apply_transport(x: torch.Tensor, plan: torch.Tensor, m: int) -> torch.Tensor:
    """Destination block j of each image = Σ_i plan[i, j]·(source block i)."""
    moved = torch.einsum("bij,bichw->bjchw", plan.to(x.dtype), to_blocks(x, m))
    return from_blocks(moved, m)


def puzzle_graphcut_batch(x: torch.Tensor, y: torch.Tensor, saliency: torch.Tensor,
                          lam: float, n: int, perm: torch.Tensor, *, gco, mean=(0.0,),
                          std=(1.0,), beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2,
                          neigh_size: int = 4, n_labels: int = 3, transport: bool = True,
                          t_eps: float = 0.8, t_size: int = 4) -> MixResult:
    """PuzzleMix of image i with perm[i] on an n×n grid; λ (B-vector) = each mask's mean."""
    b, c, _, width = x.shape
    block = width // n
    shape = (1, -1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    with torch.no_grad():
        keep, take, edge_x, edge_y, own_sal = puzzle_terms(
            x * std_t + mean_t, saliency, perm, n, beta=beta, gamma=gamma,
            neigh_size=neigh_size)
        keep, take = keep.cpu().numpy(), take.cpu().numpy()
        edge_x, edge_y = edge_x.cpu().numpy(), edge_y.cpu().numpy()
        beta_n = beta / n / 16
        masks = [graphcut_mask(gco, keep[i], take[i], edge_x[i], edge_y[i], lam, beta_n, eta,
                               n_labels) for i in range(b)]
        mask = torch.tensor(np.stack(masks), dtype=x.dtype, device=x.device)[:, None]
        own, partner = x, x[perm]
        if transport:
            t_size = min(t_size, block)
            if t_size == -1 or t_size >= block:
                m, sal = n, own_sal
            else:
                m = width // t_size
                mask = F.interpolate(mask, size=m)
                pooled = F.avg_pool2d(saliency[:, None].float(), t_size)[:, 0]
                sal = pooled / pooled.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
            own = apply_transport(own, transport_plan(mask, sal, t_eps), m)
            partner = apply_transport(partner, transport_plan(1 - mask, sal[perm], t_eps), m)
        mask = F.interpolate(mask, size=width)
        lam_used = mask.flatten(1).mean(1)
        mixed = mask * own + (1 - mask) * partner
    return MixResult(mixed, mix_targets(y, perm, lam_used), lam_used)


@METHODS.register("puzzlemix")
class PuzzleMix(SampleMixer):
    """Saliency-guided graph-cut mixing with transport; see the module docstring."""

    tasks = ("classification",)

    def __init__(self, *, num_classes: int, variant: str = "official",
                 block_nums: list[int] = (2, 4, 8, 16), beta: float = 1.2, gamma: float = 0.5,
                 eta: float = 0.2, neigh_size: int = 4, n_labels: int = 3,
                 transport: bool = True, t_eps: float = 0.8, t_size: int = 4,
                 clean_weight: float | None = None, **common):
        super().__init__(num_classes=num_classes, **common)
        if variant not in VARIANTS:
            raise ConfigError(f"method.variant must be one of {VARIANTS}, got {variant!r}")
        if self.lam_mode != "batch" or self.label_lam != "same":
            raise ConfigError("method=puzzlemix draws one λ per batch and mixes the targets by "
                              "the mask's share: keep method.lam_mode=batch and "
                              "method.label_lam=same")
        block_nums = [int(n) for n in block_nums]
        if not block_nums or min(block_nums) < 1:
            raise ConfigError(f"method.block_nums must be a non-empty list of grid sizes >= 1 "
                              f"(blocks per side), got {block_nums}")
        if variant == "official" and min(block_nums) < 2:
            raise ConfigError(f"method.block_nums must be >= 2 for variant=official (a grid "
                              f"to cut), got {block_nums}")
        if clean_weight is None:
            clean_weight = 0.0 if variant == "official" else 1.0
        for key, value in (("clean_weight", clean_weight), ("beta", beta), ("gamma", gamma),
                           ("eta", eta), ("t_eps", t_eps)):
            if not value >= 0:
                raise ConfigError(f"method.{key} must be >= 0, got {value}")
        if int(n_labels) < 2:
            raise ConfigError(f"method.n_labels must be >= 2 (levels of a block's share), "
                              f"got {n_labels}")
        if int(neigh_size) < 1 or not (int(t_size) >= 1 or int(t_size) == -1):
            raise ConfigError(f"method.neigh_size must be >= 1 and method.t_size >= 1 (or -1: "
                              f"the mask's blocks), got {neigh_size} and {t_size}")
        self.variant, self.block_nums, self.transport = variant, block_nums, bool(transport)
        self.beta, self.gamma, self.eta = float(beta), float(gamma), float(eta)
        self.neigh_size, self.n_labels = int(neigh_size), int(n_labels)
        self.t_eps, self.t_size = float(t_eps), int(t_size)
        self.clean_weight = float(clean_weight)
        self.mean, self.std = (0.0,), (1.0,)  # the dataset's, from setup()
        self._gco = import_gco("puzzlemix") if variant == "official" else None

    def setup(self, data, train_loader) -> None:
        """The dataset's normalisation, to undo it for the data smoothness term."""
        self.mean, self.std = tuple(data.mean), tuple(data.std)

    def _draw_block_num(self, h: int, w: int) -> int:
        usable = [n for n in self.block_nums if h % n == 0 and w % n == 0]
        if not usable:
            raise ConfigError(f"method.block_nums={self.block_nums}: none divides the image "
                              f"size {h}×{w}; list grid sizes that do (e.g. 2, 4)")
        return usable[torch.randint(len(usable), ()).item()]

    def saliency(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn):
        """(B×H×W saliency, clean loss): the input gradient of the clean loss. Without a
        clean term the pass runs in eval mode, leaving BatchNorm statistics alone (as
        OpenMixup and the authors' code with clean_lam=0 do)."""
        keep_clean = self.clean_weight > 0
        return input_saliency(model, x, y, loss_fn, train_mode=keep_clean and model.training,
                              keep_graph=keep_clean)

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        require_image_classification(x, labels, "puzzlemix")
        y = self.targets(labels, x.dtype)
        check_batch(x, y, self.num_classes)
        lam = 1.0 if self.progress >= self.mix_until else self.sample_lam(len(x))
        if lam == 1.0:  # not mixed this time (prob): plain CE
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0})
        h, w = x.shape[-2:]
        if self.variant == "official" and h != w:
            raise ConfigError(f"method=puzzlemix (variant=official) needs square images, got "
                              f"{h}×{w}; use method.variant=simplified")
        n = self._draw_block_num(h, w)
        saliency, clean_loss = self.saliency(model, x, y, loss_fn)
        if self.variant == "simplified":
            mixed = puzzle_batch(x, y, saliency, lam, n, self.transport)
        else:
            perm = torch.randperm(len(x), device=x.device)
            mixed = puzzle_graphcut_batch(
                x, y, saliency, lam, n, perm, gco=self._gco, mean=self.mean, std=self.std,
                beta=self.beta, gamma=self.gamma, eta=self.eta, neigh_size=self.neigh_size,
                n_labels=self.n_labels, transport=self.transport, t_eps=self.t_eps,
                t_size=self.t_size)
        logits = model(mixed.x)
        loss = loss_fn(logits, mixed.y)
        if self.clean_weight > 0:
            loss = loss + self.clean_weight * clean_loss
        return StepOutput(loss, logits, {"lam": mixed.lam, "block_num": n})

    def __repr__(self) -> str:
        return (f"PuzzleMix(num_classes={self.num_classes}, variant={self.variant!r}, "
                f"alpha={self.alpha}, prob={self.prob}, block_nums={self.block_nums}, "
                f"beta={self.beta}, gamma={self.gamma}, eta={self.eta}, "
                f"neigh_size={self.neigh_size}, n_labels={self.n_labels}, "
                f"transport={self.transport}, t_eps={self.t_eps}, t_size={self.t_size}, "
                f"clean_weight={self.clean_weight})")
