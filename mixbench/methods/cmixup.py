"""C-Mixup (Yao et al., NeurIPS 2022): mixup for regression that pairs samples with similar
labels. The partner j of sample i is drawn with probability

    P(j | i) ∝ exp(−‖k_i − k_j‖² / (2σ²)),  j ≠ i,

where k is the label (``kernel: label``), the input (``feature``) or nothing (``uniform``,
plain mixup with a random partner). One λ ~ Beta(α, α) per batch mixes inputs (or the hidden
state after the backbone's stem, ``mix_at: manifold``) and targets alike.

``scope: global`` draws partners from the whole training set, as the paper does. The N×N
matrix of the paper's code is never built: each step streams the training keys in chunks and
draws one partner per row by weighted reservoir sampling, an exact draw from P(· | i) in
O(B × chunk) memory, so N can be 100k or more. ``scope: batch`` draws partners within the batch."""
from __future__ import annotations

import logging
import math

import torch
from torch import nn

from mixbench.data.loaders import InMemoryLoader
from mixbench.errors import ConfigError
from mixbench.methods.base import Method, StepOutput
from mixbench.registry import METHODS

log = logging.getLogger(__name__)

KERNELS = ("label", "feature", "uniform")
SCOPES = ("global", "batch")
MIX_AT = ("input", "manifold")
# σ from the paper (in the targets' original units) for its datasets; elsewhere, by default,
# a quarter of the root total variance of the kernel's keys (0.25 × the label std for 1-d).
PAPER_BANDWIDTH = {"airfoil": 1.75, "no2": 1.2, "exchange_rate": 0.05, "electricity": 0.5}
DEFAULT_BANDWIDTH_FRACTION = 0.25


def squared_distances(keys: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """‖key_b − pool_j‖² as a B×N matrix, in as few passes as the key size allows."""
    if keys.shape[1] == 1:  # scalar labels, the common case: one broadcast and a square
        return (keys - pool.T).square_()
    d2 = torch.addmm((pool * pool).sum(1)[None], keys, pool.T, alpha=-2.0)
    return d2.add_((keys * keys).sum(1, keepdim=True)).clamp_min_(0.0)


def sample_partners(keys: torch.Tensor, pool: torch.Tensor, bandwidth: float,
                    exclude: torch.Tensor | None = None, chunk_size: int = 8192) -> torch.Tensor:
    """For each row of ``keys`` (B×D) one index into ``pool`` (N×D), drawn with probability
    ∝ exp(−‖key − pool_j‖² / (2σ²)); ``exclude[i]`` (a pool index) is never drawn for row i.
    ``bandwidth=inf`` gives the uniform distribution.

    One pass over the pool in chunks (memory B × chunk_size whatever N is), an exact draw by
    weighted reservoir sampling: each chunk proposes a candidate by inverse CDF on its own
    weights, which replaces the one kept so far with probability (chunk's weight) / (weight
    of the chunks seen so far, this one included). Candidate j of chunk c then survives with
    probability (w_j / W_c)·(W_c / T_c)·Π_{c' > c} T_{c'-1} / T_{c'} = w_j / T. Weights are
    kept as per-row log totals (a chunk's maximum factored out), so tiny bandwidths do not
    underflow. Two random numbers per row and chunk instead of one per pool entry."""
    n_rows, device = len(keys), keys.device
    log_total = torch.full((n_rows,), -math.inf, device=device)
    choice = torch.zeros(n_rows, dtype=torch.long, device=device)
    for start in range(0, len(pool), chunk_size):
        chunk = pool[start:start + chunk_size]
        if math.isinf(bandwidth):
            logits = torch.zeros(n_rows, len(chunk), device=device)
        else:
            logits = squared_distances(keys, chunk).mul_(-0.5 / bandwidth ** 2)
        if exclude is not None:
            # −inf at each row's excluded entry where it falls in this chunk; the other rows
            # write back a value of their own. (Boolean indexing would wait for the GPU.)
            local = (exclude - start)[:, None]
            inside = (local >= 0) & (local < len(chunk))
            column = local.clamp(0, len(chunk) - 1)
            logits.scatter_(1, column, torch.where(inside, -math.inf, logits.gather(1, column)))
        # a row whose chunk is all excluded has no maximum: factor out 0, its weight is 0
        top = logits.amax(1, keepdim=True).nan_to_num_(neginf=0.0)
        # the chunk's weights / e^top, in place. The exp is taken of logits clamped at -87
        # (torch's CPU exp takes a slow path where it underflows float32), and weights up to
        # 2e-38 (> e^-87, about float32's smallest normal number) are then set to 0, as exp
        # would nearly have made them: excluded entries (−inf) included.
        weights = logits.sub_(top).clamp_min_(-87.0).exp_()
        cdf = torch.nn.functional.threshold_(weights, 2e-38, 0.0).cumsum_(1)
        mass = cdf[:, -1:]
        pick = torch.searchsorted(cdf, torch.rand(n_rows, 1, device=device) * mass,
                                  right=True).squeeze(1).clamp_max_(len(chunk) - 1)
        log_mass = (top + mass.log()).squeeze(1)
        new_total = torch.logaddexp(log_total, log_mass)
        # (nothing seen yet and an empty chunk: −inf − −inf = nan, never replaces)
        replace = torch.rand(n_rows, device=device) < (log_mass - new_total).exp()
        choice = torch.where(replace, pick + start, choice)
        log_total = new_total
    return choice


@METHODS.register("cmixup")
class CMixup(Method):
    """Label-similarity mixup for regression; see the module docstring."""

    tasks = ("regression",)
    task_hint = ("C-Mixup pairs samples by label distance (dataset=rotated_digits, diabetes, "
                 "airfoil, no2, exchange_rate, electricity); for classification use a method "
                 "such as mixup")

    def __init__(self, *, num_classes: int, alpha: float = 2.0, bandwidth: float | None = None,
                 kernel: str = "label", scope: str = "global", mix_at: str = "input",
                 chunk_size: int = 8192):
        super().__init__(num_classes=num_classes)
        if not alpha > 0:
            raise ConfigError(f"method.alpha must be > 0 (Beta(alpha, alpha)), got {alpha}")
        if bandwidth is not None and not bandwidth > 0:
            raise ConfigError(f"method.bandwidth must be > 0 (or null for the dataset's "
                              f"default), got {bandwidth}")
        for key, value, options in (("kernel", kernel, KERNELS), ("scope", scope, SCOPES),
                                    ("mix_at", mix_at, MIX_AT)):
            if value not in options:
                raise ConfigError(f"method.{key} must be one of {options}, got {value!r}")
        if chunk_size < 1:
            raise ConfigError(f"method.chunk_size must be >= 1, got {chunk_size}")
        self.alpha, self.kernel, self.scope, self.mix_at = float(alpha), kernel, scope, mix_at
        self.bandwidth = bandwidth
        self.chunk_size = chunk_size
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))
        self._loader: InMemoryLoader | None = None
        self._pool: torch.Tensor | None = None  # the training set's kernel keys (global scope)
        self._label_scale: torch.Tensor | None = None

    # --- set-up ---------------------------------------------------------------------------
    def setup(self, data, train_loader) -> None:
        # Distances are taken in the targets' original units, where the paper's σ live.
        self._label_scale = torch.tensor(data.target_std or (1.0,), dtype=torch.float32)
        if self.scope == "global":
            if not isinstance(train_loader, InMemoryLoader):
                raise ConfigError("method.scope=global draws partners from the whole training "
                                  "set and needs an in-memory dataset; use method.scope=batch")
            self._loader = train_loader
            self._pool = self._keys(*self._all_rows(train_loader))
        if self.bandwidth is None:
            self.bandwidth = self._default_bandwidth(data.name, train_loader)
        log.info("C-Mixup: kernel=%s, scope=%s, bandwidth σ=%.4g, mix_at=%s", self.kernel,
                 self.scope, self.bandwidth, self.mix_at)

    @staticmethod
    def _all_rows(loader: InMemoryLoader) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(len(loader.y), device=loader.device)
        return loader.fetch(index, augment=False)

    def _keys(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the kernel compares: labels in original units, or flattened inputs."""
        if self.kernel == "feature":
            return x.reshape(len(x), -1).float()
        if self._label_scale.device != y.device:  # once: a host copy every step would sync
            self._label_scale = self._label_scale.to(y.device)
        return y.reshape(len(y), -1).float() * self._label_scale

    def _default_bandwidth(self, dataset: str, train_loader) -> float:
        if self.kernel == "uniform":
            return math.inf
        if self.kernel == "label" and dataset in PAPER_BANDWIDTH:
            return PAPER_BANDWIDTH[dataset]
        keys = self._pool if self._pool is not None else self._keys(*next(iter(train_loader))[:2])
        spread = keys.var(dim=0).sum().sqrt().item()
        return DEFAULT_BANDWIDTH_FRACTION * spread if spread > 0 else 1.0

    # --- the step -------------------------------------------------------------------------
    def partners(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None):
        """(partner inputs, partner targets) for a batch, drawn by the kernel."""
        bandwidth = math.inf if self.kernel == "uniform" else self.bandwidth
        keys = self._keys(x, y)
        if self.scope == "global":
            if index is None:
                raise ValueError("method.scope=global needs batches that carry their indices")
            j = sample_partners(keys, self._pool, bandwidth, exclude=index,
                                chunk_size=self.chunk_size)
            return self._loader.fetch(j)
        rows = torch.arange(len(x), device=x.device)
        j = sample_partners(keys, keys, bandwidth, exclude=rows, chunk_size=self.chunk_size)
        return x[j], y[j]

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        if self._label_scale is None:
            raise RuntimeError("CMixup.setup(data, train_loader) must run before training")
        y = self.targets(labels, x.dtype)
        x2, y2 = self.partners(x, labels, batch[2] if len(batch) > 2 else None)
        y2 = self.targets(y2, x.dtype)
        lam = self._beta.sample().item()
        if self.mix_at == "input":
            out = model(torch.lerp(x2, x, lam))
        else:  # the hidden state after the stem, as the paper's manifold variant
            b = len(x)
            out = model(torch.cat([x, x2]), mix=lambda h: torch.lerp(h[b:], h[:b], lam),
                        mix_layer=1)
        return StepOutput(loss_fn(out, torch.lerp(y2, y, lam)), out, {"lam": lam})

    def __repr__(self) -> str:
        return (f"CMixup(alpha={self.alpha}, bandwidth={self.bandwidth}, kernel={self.kernel!r}, "
                f"scope={self.scope!r}, mix_at={self.mix_at!r})")
