"""AttentiveMix (Walawalkar et al., ICASSP 2020): mix by the grid cells a frozen network
attends to.

A frozen network trained beforehand (``feature_ckpt``: a mixbench run folder or its last.pt)
looks at the clean batch; the channel mean of its last feature map is the attention map,
one value per grid cell (the feature map's own h×w, or resized to ``grid``×``grid``).

``top_cells_of: own`` (OpenMixup's attentivemix.py, the default): each image keeps its own
k most attended cells and the partner fills the rest; with ``top_k: null``
k = min(max(1, ⌊λ·cells⌋), cells), λ ~ Beta(α, α) (OpenMixup's "AttentiveMix+").
``top_cells_of: partner`` (the paper): the partner's k most attended cells are pasted at the
same positions (the paper: 6 of a ResNet-50's 7×7 cells); with ``top_k: null``
k = round((1-λ)·cells). Either way λ is each image's share of its own pixels. The frozen
network is rebuilt from the checkpoint (its config names the backbone), so the method keeps
no state of its own in checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from mixbench.errors import CheckpointError, ConfigError
from mixbench.methods.base import MixResult, StepOutput, check_batch
from mixbench.methods.model_access import require_image_classification, spatial_feature_map
from mixbench.methods.sample_mixing import SampleMixer, mix_targets
from mixbench.registry import BACKBONES, METHODS


def read_feature_checkpoint(path: str | Path) -> tuple[Path, dict]:
    """The mixbench checkpoint at ``path`` (a run folder or a .pt file), or a ConfigError
    that names method.feature_ckpt."""
    from mixbench.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise ConfigError(f"method.feature_ckpt: {err}. Point it to a mixbench run folder or "
                          f"its {CHECKPOINT_NAME}.") from err
    if "config" not in state or "head.weight" not in state.get("model", {}):
        raise ConfigError(f"method.feature_ckpt: {path} holds no backbone config or no "
                          f"classifier head; it must come from tools/train.py with a mixbench "
                          f"backbone")
    return path, state


TOP_CELLS_OF = ("own", "partner")


def attentive_batch(x: torch.Tensor, y: torch.Tensor, attention: torch.Tensor, k: int,
                    top_cells_of: str = "partner") -> MixResult:
    """Mix each image with a random partner by the ``k`` cells of ``attention`` (B×g_h×g_w)
    where the partner (``partner``: pasted in) or the image itself (``own``: kept, the
    partner fills the rest) is most attended; λ (a B-vector) is the share of own pixels."""
    b, _, h, w = x.shape
    perm = torch.randperm(b, device=x.device)
    cells = attention[0].numel()
    ranked = attention[perm] if top_cells_of == "partner" else attention
    take = torch.topk(ranked.flatten(1), k, dim=1).indices
    cell_mask = torch.zeros(b, cells, device=x.device).scatter_(1, take, 1.0)
    marked = F.interpolate(cell_mask.view(b, 1, *attention.shape[1:]), size=(h, w),
                           mode="nearest") > 0.5
    from_partner = marked if top_cells_of == "partner" else ~marked
    lam = 1.0 - from_partner.float().mean(dim=(1, 2, 3))
    return MixResult(torch.where(from_partner, x[perm], x), mix_targets(y, perm, lam), lam)


@METHODS.register("attentivemix")
class AttentiveMix(SampleMixer):
    """Mixing by a frozen network's top-k attended cells; see the module docstring."""

    tasks = ("classification",)

    def __init__(self, *, num_classes: int, feature_ckpt: str | None = None,
                 top_k: int | None = None, grid: int | None = 7, top_cells_of: str = "own",
                 alpha: float = 2.0, prob: float = 1.0):
        super().__init__(num_classes=num_classes, alpha=alpha, prob=prob)
        if top_cells_of not in TOP_CELLS_OF:
            raise ConfigError(f"method.top_cells_of must be one of {TOP_CELLS_OF}, "
                              f"got {top_cells_of!r}")
        self.top_cells_of = top_cells_of
        if not feature_ckpt:
            raise ConfigError("method=attentivemix ranks grid cells with a frozen, already "
                              "trained network: set method.feature_ckpt to a mixbench run "
                              "folder (or its last.pt), e.g. one trained with tools/train.py")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"method.top_k must be >= 1 (or null to draw it from λ), "
                              f"got {top_k}")
        if grid is not None and grid < 1:
            raise ConfigError(f"method.grid must be >= 1 (or null for the feature map's "
                              f"size), got {grid}")
        self.feature_ckpt, self.top_k, self.grid = str(feature_ckpt), top_k, grid
        self._source, self._checkpoint = read_feature_checkpoint(feature_ckpt)
        self._frozen: nn.Module | None = None

    def frozen_network(self, x: torch.Tensor) -> nn.Module:
        """The checkpoint's backbone, built on first use (input channels from the batch),
        in eval mode and without gradients."""
        if self._frozen is None:
            from mixbench.engine.checkpoint import restore_model

            config, weights = self._checkpoint["config"], self._checkpoint["model"]
            network = BACKBONES.build(config["backbone"],
                                      num_classes=weights["head.weight"].shape[0],
                                      in_channels=x.shape[1])
            if not hasattr(network, "feature_map"):
                raise ConfigError(f"method.feature_ckpt: the backbone in {self._source} "
                                  f"({config['backbone']['name']}) has no feature map")
            restore_model(network, weights, self._source)
            self._frozen = network.eval().requires_grad_(False)
            self._checkpoint = None  # the weights now live in the network
        return self._frozen.to(x.device)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            fmap = spatial_feature_map(self.frozen_network(x), x, "attentivemix").float()
            att = fmap.mean(dim=1)
            if self.grid is not None:
                att = F.interpolate(att[:, None], size=(self.grid, self.grid), mode="bilinear",
                                    align_corners=False)[:, 0]
        return att

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        require_image_classification(x, labels, "attentivemix")
        y = self.targets(labels, x.dtype)
        check_batch(x, y, self.num_classes)
        if self.prob < 1.0 and torch.rand(()).item() >= self.prob:
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0})
        att = self.attention(x)
        cells = att[0].numel()
        if self.top_k is not None and self.top_k >= cells:
            raise ConfigError(f"method.top_k={self.top_k} must be below the number of "
                              f"attention cells ({cells}, from the {tuple(att.shape[1:])} "
                              f"map); lower top_k or set method.grid")
        if self.top_k is not None:
            k = self.top_k
        elif self.top_cells_of == "own":  # OpenMixup: the kept cells, at least 1
            k = min(max(1, int(self._beta.one() * cells)), cells)
        else:
            k = round((1.0 - self._beta.one()) * cells)
        unmixed = k == cells if self.top_cells_of == "own" else k == 0
        if unmixed:
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0})
        mixed = attentive_batch(x, y, att, k, self.top_cells_of)
        logits = model(mixed.x)
        return StepOutput(loss_fn(logits, mixed.y), logits, {"lam": mixed.lam})

    def __repr__(self) -> str:
        return (f"AttentiveMix(num_classes={self.num_classes}, feature_ckpt={self.feature_ckpt!r}, "
                f"top_k={self.top_k}, grid={self.grid}, top_cells_of={self.top_cells_of!r}, "
                f"alpha={self.alpha}, prob={self.prob})")
