"""Metrix (Venkataramanan et al., "It Takes Two to Tango: Mixup for Deep Metric Learning",
ICLR 2022): mixup inside pair losses. Each step adds to the plain loss of the batch
``weight`` × the loss's Metrix form on mixed examples, whose positive-ness with respect to
their anchor is interpolated (mixbench.losses.pair).

Per step one pairing is drawn at random, as the official train.py does (``random.randint``):
- positive-negative: for each anchor with a positive in the batch, u = λ·x_p + (1−λ)·x_n with
  its first positive p and each negative n; v = λ;
- anchor-negative: for each anchor *without* a positive in the batch,
  u = λ·x_a + (1−λ)·x_n; v = λ (the official code takes only those anchors,
  mixup/utils.py L70-73, L136-139, L184-187: with m-per-class batches there are none, and
  the step is the plain loss).

Where: ``input`` mixes images and keeps only the hardest (closest) negative per anchor;
``feature`` mixes the backbone's last feature map before pooling; ``embed`` mixes
embeddings. λ ~ Beta(α, α), one per step."""
from __future__ import annotations

import torch

from mixbench.errors import ConfigError
from mixbench.losses.pair import MixedPairs
from mixbench.methods.base import Method, StepOutput
from mixbench.registry import METHODS

MODES = ("input", "feature", "embed")
PAIRINGS = ("random", "positive_negative", "anchor_negative")


def metrix_triplets(labels: torch.Tensor, pairing: int, embeddings: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor, i, j) index triples of the mixed examples u = λ·x_i + (1−λ)·x_j.
    ``pairing`` 0: positive-negative (i = the anchor's first positive, j = a negative);
    1: anchor-negative (i = the anchor itself) for anchors without a positive. Every negative
    of the anchor, or with ``embeddings`` only the closest one."""
    same = labels[:, None] == labels[None, :]
    others = same.clone()
    others.fill_diagonal_(False)
    has_positive = others.any(1)
    anchors_of_kind = has_positive if pairing == 0 else ~has_positive
    negative = ~same & anchors_of_kind[:, None]
    if embeddings is not None:  # input mode: only the hardest negative per anchor
        d = torch.cdist(embeddings.detach().float(), embeddings.detach().float())
        d = d.masked_fill(~negative, float("inf"))
        hardest = d.argmin(1)
        keep = negative.any(1)
        anchor = torch.nonzero(keep).flatten()
        negative_index = hardest[anchor]
    else:
        anchor, negative_index = torch.nonzero(negative, as_tuple=True)
    # the first positive in batch order (official: mixup/utils.py L114, L174)
    first = others.float().argmax(1)
    i = first[anchor] if pairing == 0 else anchor
    return anchor, i, negative_index


@METHODS.register("metrix")
class Metrix(Method):
    """``mode``: input | feature | embed. ``weight``: of the mixed loss (0.4, train.py L71);
    ``embed_anchor_negative_weight``: the official embed mode's weight for anchor-negative
    steps (0.3, train.py L109); ``pairing``: random (one drawn per step, as the official
    code) or always one of them."""

    tasks = ("retrieval",)
    task_hint = "Metrix mixes inside pair losses: run it with protocol=retrieval"

    def __init__(self, *, num_classes: int, mode: str = "feature", alpha: float = 2.0,
                 weight: float = 0.4, embed_anchor_negative_weight: float = 0.3,
                 pairing: str = "random"):
        super().__init__(num_classes=num_classes)
        if mode not in MODES:
            raise ConfigError(f"method.mode must be one of {', '.join(MODES)}, got {mode!r}")
        if pairing not in PAIRINGS:
            raise ConfigError(f"method.pairing must be one of {', '.join(PAIRINGS)}, got "
                              f"{pairing!r}")
        if not alpha > 0:
            raise ConfigError(f"method.alpha must be > 0, got {alpha}")
        if weight < 0 or embed_anchor_negative_weight < 0:
            raise ConfigError(f"method.weight and method.embed_anchor_negative_weight must be "
                              f">= 0, got {weight}, {embed_anchor_negative_weight}")
        self.mode, self.alpha, self.pairing = mode, float(alpha), pairing
        self.weight, self.embed_an_weight = float(weight), float(embed_anchor_negative_weight)

    def step(self, model, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        if not hasattr(loss_fn, "mixed"):
            raise ConfigError("method=metrix needs a retrieval loss (loss=contrastive, "
                              "multi_similarity or proxy_anchor)")
        pairing = (int(torch.randint(2, ()).item()) if self.pairing == "random"
                   else PAIRINGS.index(self.pairing) - 1)
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample().item()
        weight = self.embed_an_weight if self.mode == "embed" and pairing == 1 else self.weight
        if self.mode == "feature":
            anchor, i, j = metrix_triplets(labels, pairing)
            out = model(x, mix=lambda h: torch.lerp(h[j], h[i], lam))
            embeddings, mixed = out[: len(x)], out[len(x):]
        else:
            embeddings = model(x)
            hardest = embeddings if self.mode == "input" else None
            anchor, i, j = metrix_triplets(labels, pairing, hardest)
            if self.mode == "input":
                mixed = model(torch.lerp(x[j], x[i], lam)) if len(anchor) else embeddings[:0]
            else:
                mixed = torch.lerp(embeddings[j], embeddings[i], lam)
        loss = loss_fn(embeddings, labels)
        if len(anchor):
            pairs = MixedPairs(mixed, anchor, labels[i], labels[j], lam)
            loss = loss + weight * loss_fn.mixed(embeddings, labels, pairs)
        return StepOutput(loss, embeddings, {"lam": lam, "pairing": pairing,
                                             "mixed": len(anchor)})

    def __repr__(self) -> str:
        return f"Metrix(mode={self.mode}, alpha={self.alpha}, weight={self.weight})"
