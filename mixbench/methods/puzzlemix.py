"""PuzzleMix (Kim et al., ICML 2020), simplified: a saliency-guided block mask with a
greedy transport.

Per step: the gradient of the clean loss with respect to the input gives the saliency
(√(mean over channels of grad²)), averaged over an n×n grid of blocks (n drawn from
``block_nums``) and normalised per image. With λ ~ Beta(α, α), the k = round((1-λ)·n²) blocks
where the partner's saliency most exceeds the image's own come from the partner, so
λ = 1 - k/n² exactly. With ``transport``, each image's most salient blocks are moved into
the blocks the mask assigns it (its k, or n²-k, most salient blocks, matched to those
positions in raster order). The loss is CE(mixed) + ``clean_weight``·CE(clean), the
clean term being the loss whose gradient gave the saliency (the authors' ``clean_lam``).

Simplified versus the paper: (1) the mask is the top-k blocks of the saliency difference,
not a graph-cut labelling, so there is no smoothness (pairwise) term and no λ prior term,
and the mask is binary (the paper's n_labels=3 allows half-mixed blocks); (2) the transport
is a cost-free greedy matching in raster order, not the paper's transport that penalises
moving blocks far; (3) no Gaussian smoothing of the saliency and no adversarial input
perturbation. One λ and one n per batch."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mixbench.errors import ConfigError
from mixbench.methods.base import MixResult, StepOutput, check_batch
from mixbench.methods.model_access import require_image_classification
from mixbench.methods.sample_mixing import SampleMixer, mix_targets
from mixbench.registry import METHODS


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


@METHODS.register("puzzlemix")
class PuzzleMix(SampleMixer):
    """Saliency-guided block mixing with a greedy transport; see the module docstring."""

    tasks = ("classification",)

    def __init__(self, *, num_classes: int, alpha: float = 1.0, prob: float = 1.0,
                 block_nums: list[int] = (2, 4, 8, 16), transport: bool = True,
                 clean_weight: float = 1.0):
        super().__init__(num_classes=num_classes, alpha=alpha, prob=prob)
        block_nums = [int(n) for n in block_nums]
        if not block_nums or min(block_nums) < 1:
            raise ConfigError(f"method.block_nums must be a non-empty list of grid sizes >= 1 "
                              f"(blocks per side), got {block_nums}")
        if not clean_weight >= 0:
            raise ConfigError(f"method.clean_weight must be >= 0, got {clean_weight}")
        self.block_nums, self.transport = block_nums, bool(transport)
        self.clean_weight = float(clean_weight)

    def _draw_block_num(self, h: int, w: int) -> int:
        usable = [n for n in self.block_nums if h % n == 0 and w % n == 0]
        if not usable:
            raise ConfigError(f"method.block_nums={self.block_nums}: none divides the image "
                              f"size {h}×{w}; list grid sizes that do (e.g. 2, 4)")
        return usable[torch.randint(len(usable), ()).item()]

    def saliency(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn):
        """(B×H×W saliency, clean loss): the input gradient of the clean loss. Without a
        clean term the pass runs in eval mode, leaving BatchNorm statistics alone (as the
        authors' code does with clean_lam=0)."""
        keep_clean = self.clean_weight > 0
        was_training = model.training
        if not keep_clean:
            model.eval()
        x_in = x.detach().requires_grad_(True)
        clean_loss = loss_fn(model(x_in), y)
        (grad,) = torch.autograd.grad(clean_loss, x_in, retain_graph=keep_clean)
        model.train(was_training)
        return grad.detach().square().mean(dim=1).sqrt(), clean_loss

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        require_image_classification(x, labels, "puzzlemix")
        y = self.targets(labels, x.dtype)
        check_batch(x, y, self.num_classes)
        lam = self.sample_lam(len(x))
        if lam == 1.0:  # not mixed this time (prob): plain CE
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0})
        n = self._draw_block_num(*x.shape[-2:])
        saliency, clean_loss = self.saliency(model, x, y, loss_fn)
        mixed = puzzle_batch(x, y, saliency, lam, n, self.transport)
        logits = model(mixed.x)
        loss = loss_fn(logits, mixed.y)
        if self.clean_weight > 0:
            loss = loss + self.clean_weight * clean_loss
        return StepOutput(loss, logits, {"lam": mixed.lam, "block_num": n})

    def __repr__(self) -> str:
        return (f"PuzzleMix(num_classes={self.num_classes}, alpha={self.alpha}, prob={self.prob}, "
                f"block_nums={self.block_nums}, transport={self.transport}, "
                f"clean_weight={self.clean_weight})")
