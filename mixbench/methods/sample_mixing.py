"""Input-level mixers: the options every mixer shares, and mixup, cutmix and their switch.

Everything is a whole-batch tensor op on x's device. The partner of sample i is ``perm[i]``.
``lam_mode=batch`` uses one λ ~ Beta(α, α) for the batch (a host float), ``sample`` one per
sample (a B-vector on x's device; torchvision's v2 MixUp cannot do this). ``prob`` is the
chance that a batch (or, per sample, a sample) is mixed; a sample that is not mixed has λ = 1.

A mixer implements ``mix_inputs(x, perm, lam) -> (mixed_x, lam_used)``; ``SampleMixer`` does
the rest (validation, ``prob``, ``mix_until``, ``label_lam``, the targets)."""
from __future__ import annotations

import functools
import inspect
import math

import torch

from mixbench.errors import ConfigError
from mixbench.methods.base import Method, MixResult, check_batch
from mixbench.registry import METHODS

LAM_MODES = ("batch", "sample")
LABEL_LAMS = ("same", "independent")
Lam = float | torch.Tensor


def check_unit_interval(key: str, value: float, *, open_low: bool = False) -> float:
    """``value`` as a float in [0, 1] ((0, 1] with ``open_low``), else a ConfigError naming
    ``method.<key>``."""
    low_ok = value > 0.0 if open_low else value >= 0.0
    if not (low_ok and value <= 1.0):
        raise ConfigError(f"method.{key} must be in {'(0' if open_low else '[0'}, 1], "
                          f"got {value}")
    return float(value)


def check_alpha(key: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"method.{key} must be > 0 (Beta({key}, {key})), got {value}")
    return float(value)


class DirichletSampler:
    """Weights ~ Dirichlet(α, …, α) over ``parts``: gammas Gᵢ ~ Gamma(α, 1) from
    ``torch.distributions`` over their sum, in float64 so that small α never gives 0/0.
    (torch's own Beta and Dirichlet draw per-sample tuples in another order.) With 2 parts it
    is Beta(α, α), uniform for α = 1: then drawn as one uniform number."""

    def __init__(self, alpha: float, parts: int = 2):
        self.alpha, self.parts = alpha, parts
        self.uniform = alpha == 1.0 and parts == 2
        self._one = self._gammas(torch.full((parts,), alpha, dtype=torch.float64))
        self._table: tuple | None = None  # (n, device) and the Gamma of a parts×n table

    @staticmethod
    def _gammas(concentration: torch.Tensor) -> torch.distributions.Gamma:
        # no argument validation: it would read the device's values on the host every step
        return torch.distributions.Gamma(concentration, torch.ones_like(concentration),
                                         validate_args=False)

    def weights(self) -> list[float]:
        """One draw, as host floats."""
        if self.uniform:
            u = torch.rand((), dtype=torch.float64).item()
            return [u, 1.0 - u]
        g = self._one.sample().tolist()
        total = sum(g)
        return [v / total for v in g]

    def weight_table(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` draws as a parts×n float32 table on ``device`` (row i: the weights of part i)."""
        if self.uniform:
            u = torch.rand(n, device=device)
            return torch.stack([u, 1.0 - u])
        key = (n, torch.device(device))  # the batch size rarely changes: build it once
        if self._table is None or self._table[0] != key:
            self._table = key, self._gammas(torch.full((self.parts, n), self.alpha,
                                                       dtype=torch.float64, device=device))
        g = self._table[1].sample()
        return g.div_(g.sum(0)).float()


class BetaSampler(DirichletSampler):
    """λ ~ Beta(α, α): the first weight of a two-part Dirichlet."""

    def __init__(self, alpha: float):
        super().__init__(alpha, parts=2)

    def one(self) -> float:
        if self.uniform:
            return torch.rand((), dtype=torch.float64).item()
        return self.weights()[0]

    def many(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        if self.uniform:
            return torch.rand(n, device=device)
        return self.weight_table(n, device)[0]


class SampleMixer(Method):
    """Base of the input-level mixers; see the module docstring.

    Options every mixer has: ``alpha`` (λ ~ Beta(α, α)), ``prob``, ``lam_mode``,
    ``label_lam`` (``independent``: targets mixed with a second λ' ~ Beta(α, α) drawn
    independently of the inputs' λ, λ' = 1 where the input is not mixed) and ``mix_until``
    (no mixing once that fraction of training is done)."""

    needs_images = True  # mixers that cut or mask pixels need B×C×H×W batches

    def __init_subclass__(cls, **kwargs):
        # A subclass's __init__ takes its own options and passes ``**common`` on. Give the
        # class the full signature, so that the registry checks and lists every option.
        super().__init_subclass__(**kwargs)
        own = [p for name, p in inspect.signature(cls.__init__).parameters.items()
               if name != "self" and p.kind != p.VAR_KEYWORD]
        common = [p for name, p in inspect.signature(SampleMixer.__init__).parameters.items()
                  if name != "self" and name not in {q.name for q in own}]
        cls.__signature__ = inspect.Signature(own + common)

    def __init__(self, *, num_classes: int, alpha: float = 1.0, prob: float = 1.0,
                 lam_mode: str = "batch", label_lam: str = "same", mix_until: float = 1.0):
        super().__init__(num_classes=num_classes)
        self.alpha = check_alpha("alpha", alpha)
        self.prob = check_unit_interval("prob", prob)
        if lam_mode not in LAM_MODES:
            raise ConfigError(f"method.lam_mode must be one of {LAM_MODES}, got {lam_mode!r}")
        if label_lam not in LABEL_LAMS:
            raise ConfigError(f"method.label_lam must be one of {LABEL_LAMS}, "
                              f"got {label_lam!r}")
        self.mix_until = check_unit_interval("mix_until", mix_until, open_low=True)
        self.lam_mode, self.label_lam = lam_mode, label_lam
        self._beta = BetaSampler(self.alpha)

    def sample_lam(self, batch_size: int, device: torch.device | str = "cpu") -> Lam:
        """λ per batch (a float; 1.0 when the batch is not mixed) or per sample (a B-vector
        on ``device``; 1.0 for samples that are not mixed)."""
        if self.lam_mode == "batch":
            if self.prob < 1.0 and torch.rand(()).item() >= self.prob:
                return 1.0
            return self._beta.one()
        lam = self._beta.many(batch_size, device)
        if self.prob < 1.0:
            lam = torch.where(torch.rand(batch_size, device=device) < self.prob, lam, 1.0)
        return lam

    def independent_lam(self, lam: Lam) -> Lam:
        """A fresh λ' ~ Beta(α, α) shaped like ``lam`` for the targets; 1 where ``lam`` is 1
        (a sample that is not mixed keeps its own label)."""
        if isinstance(lam, float):
            return 1.0 if lam == 1.0 else self._beta.one()
        return torch.where(lam < 1.0, self._beta.many(len(lam), lam.device), 1.0)

    def mix_inputs(self, x: torch.Tensor, perm: torch.Tensor,
                   lam: Lam) -> tuple[torch.Tensor, Lam]:
        """The mixed batch and the λ actually used (the fraction of each input kept)."""
        raise NotImplementedError

    def mix_batch(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        check_batch(x, y, self.num_classes)
        if self.needs_images and x.dim() != 4:
            raise ValueError(f"{type(self).__name__} needs image batches B×C×H×W, "
                             f"got shape {tuple(x.shape)}")
        if self.prob == 0.0 or self.progress >= self.mix_until:
            return MixResult(x, y, 1.0)
        lam = self.sample_lam(x.shape[0], x.device)
        if isinstance(lam, float) and lam == 1.0:
            return MixResult(x, y, 1.0)
        perm = torch.randperm(x.shape[0], device=x.device)
        mixed, lam_used = self.mix_inputs(x, perm, lam)
        target_lam = self.target_lam(lam, lam_used)
        return MixResult(mixed, mix_targets(y, perm, target_lam), lam_used, target_lam)

    def target_lam(self, lam: Lam, lam_used: Lam) -> Lam:
        """The own label's weight: the λ used (``label_lam=same``) or a fresh draw."""
        return lam_used if self.label_lam == "same" else self.independent_lam(lam)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, alpha={self.alpha}, "
                f"prob={self.prob}, lam_mode={self.lam_mode!r}, "
                f"label_lam={self.label_lam!r}, mix_until={self.mix_until})")


def mix_targets(y: torch.Tensor, perm: torch.Tensor, lam: Lam) -> torch.Tensor:
    """λ·y + (1-λ)·y[perm], with λ a float or a B-vector."""
    weight = lam if isinstance(lam, float) else lam.to(y.device, y.dtype)[:, None]
    return y.index_select(0, perm).lerp_(y, weight)


def mix_pairs(x: torch.Tensor, perm: torch.Tensor, weight: float | torch.Tensor, *,
              of: str = "x") -> torch.Tensor:
    """Every sample mixed with its partner ``x[perm]``: weight·x + (1-weight)·x[perm], the
    one pairwise mix every method uses (inputs, hidden states, learned masks). ``weight`` is a
    float, a B-vector (one per sample, for x of any rank) or a tensor broadcasting to x; with
    ``of="partner"`` it is the partner's share instead, (1-weight)·x + weight·x[perm] (masks
    of pasted pixels, without a ``1 - mask`` pass).

    torch.lerp keeps a value exactly at weight 0 or 1. The partner copy (index_select copies
    whole rows: faster on the CPU than x[perm]'s element-wise gather) is the only new buffer:
    the mix is written into it, except where autograd needs a fresh output (``out=`` is not
    recorded)."""
    if isinstance(weight, torch.Tensor) and weight.dim() == 1 and x.dim() > 1:
        weight = per_sample(weight, x)
    partner = x.index_select(0, perm)
    if of == "x":
        return partner.lerp_(x, weight)
    if of != "partner":
        raise ValueError(f"of must be 'x' or 'partner', got {of!r}")
    needs_graph = torch.is_grad_enabled() and (
        x.requires_grad or (isinstance(weight, torch.Tensor) and weight.requires_grad))
    if needs_graph:
        return torch.lerp(x, partner, weight)
    return torch.lerp(x, partner, weight, out=partner)


def host_to(tensor: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A small host tensor on x's device and dtype without waiting for the device: a copy
    from pageable memory would synchronise, one from pinned memory is queued."""
    if x.device.type != "cuda":
        return tensor.to(x.device, x.dtype)
    return tensor.to(x.dtype).pin_memory().to(x.device, non_blocking=True)


def per_sample(lam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A B-vector as B×1×…×1 in x's dtype, to broadcast over a sample."""
    return lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


def box_halves(lam: Lam, height: int, width: int):
    """Half height and width of CutMix boxes of area ratio 1-λ (the box is twice that):
    Python ints for a float λ (one box for the batch), else int64 tensors like λ."""
    if isinstance(lam, float):
        cut = math.sqrt(1.0 - lam)
        return int(cut * height) // 2, int(cut * width) // 2
    cut = torch.sqrt(1.0 - lam)
    return (cut * height).long() // 2, (cut * width).long() // 2


def clip(value, low, high):
    """``value`` limited to [low, high]; ints or tensors (a tensor bound is per sample)."""
    if isinstance(value, torch.Tensor):
        return value.clamp_min(low).clamp_max(high)
    return min(max(value, low), high)


def box_bounds(lam: Lam, height: int, width: int, centre=None, keep_inside: bool = False):
    """CutMix boxes with area ratio 1-λ centred at ``centre`` = (rows, cols), by default
    uniform random pixels. Clipped to the image (CutMix), or with ``keep_inside`` moved whole
    into it so the area is exactly the drawn one. (top, bottom, left, right): Python ints for
    a float λ and no centres (one box, a few host operations), else int64 tensors."""
    half_h, half_w = box_halves(lam, height, width)
    if centre is None:
        if isinstance(lam, float):  # one draw for both coordinates
            cy, cx = divmod(int(torch.randint(0, height * width, ())), width)
        else:
            cy = torch.randint(0, height, lam.shape, device=lam.device)
            cx = torch.randint(0, width, lam.shape, device=lam.device)
    else:
        cy, cx = centre
    if keep_inside:
        top = clip(cy - half_h, 0, height - 2 * half_h)
        left = clip(cx - half_w, 0, width - 2 * half_w)
        return top, top + 2 * half_h, left, left + 2 * half_w
    return (clip(cy - half_h, 0, height), clip(cy + half_h, 0, height),
            clip(cx - half_w, 0, width), clip(cx + half_w, 0, width))


def box_keep_weight(top, bottom, left, right, height: int, width: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """B×H×W weights of x: 0 inside each sample's box [top, bottom) × [left, right), 1
    outside. A pixel is kept when its row or its column is outside the box: one broadcast
    maximum of float indicators, several times faster than combining boolean masks."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    row_out = ((rows < top[:, None]) | (rows >= bottom[:, None])).to(dtype)  # B×H
    col_out = ((cols < left[:, None]) | (cols >= right[:, None])).to(dtype)  # B×W
    return torch.maximum(row_out[:, :, None], col_out[:, None, :])


def box_area_lam(top, bottom, left, right, height: int, width: int) -> Lam:
    """1 - box area / image area: the λ a pasted box leaves to x."""
    area = (bottom - top) * (right - left)
    if isinstance(area, torch.Tensor):
        area = area.float()
    return 1.0 - area / (height * width)


def mixup_inputs(x: torch.Tensor, perm: torch.Tensor, lam: Lam) -> tuple[torch.Tensor, Lam]:
    return mix_pairs(x, perm, lam), lam


@functools.lru_cache(maxsize=16)
def box_tables(height: int, width: int, device):
    """Constants of per-sample CutMix boxes on ``device``, built once and never modified:
    tensor([H, W]) and its half (float32); zeros and ±1, to put a box's two ends around its
    centre and clip them; and ``steps``, (L+1)×(L+1) with L = max(H, W), whose row k is 1 at
    pixels i < k and holds k in its last column, so that ``steps[high] - steps[low]`` marks
    the pixels low ≤ i < high and ends in the extent high - low."""
    size = torch.tensor([height, width], dtype=torch.float32, device=device)
    side = max(height, width)
    steps = torch.ones(side + 1, side + 1, device=device).tril_(-1)
    steps[:, side] = torch.arange(side + 1, device=device)
    ends = torch.tensor([-1.0, 1.0], device=device).view(2, 1, 1)
    return size, size / 2, torch.zeros(2, device=device), ends, steps


def cutmix_paste_weight(lam: torch.Tensor, height: int, width: int):
    """Per sample: n×1×H×W weights of the partner (1 in a random box of area 1-λ, clipped to the
    image, else 0) and the λ kept, 1 - box area / image area.

    The boxes of ``box_bounds`` in about fifteen small ops (on the CPU each costs
    microseconds, as much as the blend): rows and columns together as tensors of whole
    numbers in float32, and the pixels inside looked up in ``box_tables``' steps."""
    size, half_size, zero, ends, steps = box_tables(height, width, lam.device)
    n, side = len(lam), steps.shape[1] - 1
    half = torch.outer(torch.rsub(lam, 1.0).sqrt_(), half_size).floor_()  # ⌊cut·H⌋ // 2
    centre = torch.rand(n, 2, device=lam.device).mul_(size).floor_()  # uniform pixels
    # (low, high) × n × (rows, cols), clipped to the image
    bounds = torch.addcmul(centre, half, ends).clamp_(zero, size)
    low, high = steps.index_select(0, bounds.view(-1).long()).view(2, n, 2, -1).unbind()
    inside = high - low  # n × (rows, cols) × (pixels low ≤ i < high, extent); contiguous
    # n×1×H×1 rows times n×1×1×W columns, and the n×2 extents, as strided views of
    # ``inside`` (one op each instead of a select, a slice and an unsqueeze per axis)
    row = 2 * (side + 1)
    weight = torch.mul(inside.as_strided((n, 1, height, 1), (row, 0, 1, 0)),
                       inside.as_strided((n, 1, 1, width), (row, 0, 0, 1), side + 1))
    extents = inside.as_strided((n, 2), (row, side + 1), side)
    return weight, torch.rsub(extents.prod(1), 1.0, alpha=1.0 / (height * width))


def cutmix_inputs(x: torch.Tensor, perm: torch.Tensor, lam: Lam) -> tuple[torch.Tensor, Lam]:
    h, w = x.shape[-2:]
    if isinstance(lam, float):  # one box for the batch: an H×W weight
        top, bottom, left, right = box_bounds(lam, h, w)
        # Mixing whole rows with a 0/1 weight: one pass at memory bandwidth, where a clone
        # plus a copy of the strided box is two (docs/benchmarks.md), with the same values.
        keep = torch.ones(h, w, dtype=x.dtype, device=x.device)
        keep[top:bottom, left:right] = 0.0
        return mix_pairs(x, perm, keep), box_area_lam(top, bottom, left, right, h, w)
    weight, lam_used = cutmix_paste_weight(lam, h, w)
    return mix_pairs(x, perm, weight.to(x.dtype), of="partner"), lam_used


@METHODS.register("mixup")
class Mixup(SampleMixer):
    """x̃ = λx + (1-λ)x[perm], ỹ = λy + (1-λ)y[perm] (Zhang et al., 2018)."""

    needs_images = False

    def mix_inputs(self, x, perm, lam):
        return mixup_inputs(x, perm, lam)


@METHODS.register("cutmix")
class CutMix(SampleMixer):
    """Paste a box of area ratio 1-λ from x[perm]; λ is recomputed from the clipped box
    (Yun et al., 2019)."""

    def mix_inputs(self, x, perm, lam):
        return cutmix_inputs(x, perm, lam)


@METHODS.register("mixup_cutmix")
class MixupCutMix(SampleMixer):
    """CutMix with probability ``switch_prob``, else mixup (timm's convention): per batch, or
    per sample with ``lam_mode=sample``. λ ~ Beta(alpha, alpha) for mixup and
    Beta(cutmix_alpha, cutmix_alpha) for cutmix."""

    def __init__(self, *, num_classes: int, alpha: float = 1.0, cutmix_alpha: float = 0.2,
                 switch_prob: float = 0.5, **common):
        super().__init__(num_classes=num_classes, alpha=alpha, **common)
        self.cutmix_alpha = check_alpha("cutmix_alpha", cutmix_alpha)
        self.switch_prob = check_unit_interval("switch_prob", switch_prob)
        self._cutmix_beta = BetaSampler(self.cutmix_alpha)

    def mix_inputs(self, x, perm, lam):
        if isinstance(lam, float):
            if torch.rand(()).item() < self.switch_prob:
                return cutmix_inputs(x, perm, self._cutmix_beta.one())
            return mixup_inputs(x, perm, lam)
        # Per sample: one blend in which the partner's weight is the box of a cutmix sample
        # and 1-λ at every pixel of a mixup sample.
        b, (h, w) = len(lam), x.shape[-2:]
        use_cutmix = (torch.rand(b, device=lam.device) < self.switch_prob) & (lam < 1.0)
        lam_cut = torch.where(use_cutmix, self._cutmix_beta.many(b, lam.device), 1.0)
        lam_mix = torch.where(use_cutmix, 1.0, lam)
        weight, lam_kept = cutmix_paste_weight(lam_cut, h, w)
        weight = weight.to(x.dtype).add_(per_sample(1.0 - lam_mix, x))
        return mix_pairs(x, perm, weight, of="partner"), lam_kept * lam_mix

    def __repr__(self) -> str:
        return (super().__repr__()[:-1] + f", cutmix_alpha={self.cutmix_alpha}, "
                f"switch_prob={self.switch_prob})")


@METHODS.register("dmixup")
class DMixup(SampleMixer):
    """d-Mixup (Chidambaram & Ge, ICLR 2024): convex combinations of d + 1 samples, the
    weights ~ Dirichlet(α, …, α) and the labels mixed with the same weights; d = 1 is mixup
    (with the same draws). Each sample is combined with ``perm_k[i]`` of d permutations; per
    batch one set of weights, per sample (``lam_mode=sample``) one each; λ is the weight
    of the sample itself. ``label_lam`` is mixup's alone."""

    needs_images = False

    def __init__(self, *, num_classes: int, d: int = 2, alpha: float = 1.0, **common):
        super().__init__(num_classes=num_classes, alpha=alpha, **common)
        if not isinstance(d, int) or d < 1:
            raise ConfigError(f"method.d must be an integer >= 1 (1 is mixup), got {d!r}")
        if self.label_lam != "same":
            raise ConfigError("method.label_lam=independent is mixup's; d-Mixup mixes the "
                              "labels with the weights of the inputs")
        self.d = d
        self._dirichlet = DirichletSampler(self.alpha, d + 1)

    def mix_batch(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        check_batch(x, y, self.num_classes)
        n = x.shape[0]
        if self.prob == 0.0 or self.progress >= self.mix_until:
            return MixResult(x, y, 1.0)
        if self.lam_mode == "batch":
            if self.prob < 1.0 and torch.rand(()).item() >= self.prob:
                return MixResult(x, y, 1.0)
            weights = self._dirichlet.weights()
            perms = [torch.randperm(n, device=x.device) for _ in range(self.d)]
            mixed_x, mixed_y = x * weights[0], y * weights[0]
            for w, perm in zip(weights[1:], perms):
                mixed_x = mixed_x.add_(x.index_select(0, perm), alpha=w)
                mixed_y = mixed_y.add_(y.index_select(0, perm), alpha=w)
            return MixResult(mixed_x, mixed_y, weights[0])
        table = self._dirichlet.weight_table(n, x.device)  # (d+1)×n
        if self.prob < 1.0:  # a sample that is not mixed keeps weight 1 on itself
            own = torch.zeros_like(table)
            own[0] = 1.0
            table = torch.where(torch.rand(n, device=x.device) < self.prob, table, own)
        perms = [torch.randperm(n, device=x.device) for _ in range(self.d)]
        mixed_x, mixed_y = x * per_sample(table[0], x), y * table[0, :, None]
        for w, perm in zip(table[1:], perms):
            mixed_x = mixed_x.addcmul_(x.index_select(0, perm), per_sample(w, x))
            mixed_y = mixed_y.addcmul_(y.index_select(0, perm), w[:, None])
        return MixResult(mixed_x, mixed_y, table[0])

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, d={self.d})"
