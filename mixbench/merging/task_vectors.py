"""What every merger shares: which tensors merge, the task vectors τ_i = θ_i − θ₀ computed one
tensor at a time (never held for the whole model), per-task scales, the groups that thresholds
are taken over, and the output state dict."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mixbench.engine.seeding import derive_seed
from mixbench.errors import ConfigError

StateDict = Mapping[str, Tensor]
THRESHOLDS = ("global", "per_tensor")
SHOWN = 5  # offending keys named per kind of problem before "and N more"


def _few(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _mismatches(base: StateDict, model: StateDict, wanted: Sequence[str],
                extra_allowed: bool) -> list[str]:
    missing = [name for name in wanted if name in base and name not in model]
    extra = [] if extra_allowed else [name for name in model if name not in base]
    shapes = [f"{name} {tuple(base[name].shape)} in the base, {tuple(model[name].shape)} here"
              for name in wanted if name in base and name in model
              and model[name].shape != base[name].shape]
    return ([f"missing keys {_few(missing)}"] if missing else []) + \
        ([f"extra keys {_few(extra)}"] if extra else []) + \
        ([f"shapes differ: {_few(shapes)}"] if shapes else [])


def check_compatible(base: StateDict, finetuned: Sequence[StateDict],
                     names: Iterable[str] | None = None) -> None:
    """Raise ``ConfigError`` naming the keys that stop the fine-tuned models from merging with
    ``base``: keys of base they miss, keys they have that base does not, and shapes that
    differ. With ``names`` only those keys are checked (and extra keys are allowed, e.g. each
    task's own head)."""
    wanted = list(base) if names is None else list(names)
    problems = []
    unknown = [name for name in wanted if name not in base]
    if unknown:
        problems.append(f"keys not in the base model: {_few(unknown)}")
    for index, model in enumerate(finetuned):
        found = _mismatches(base, model, wanted, extra_allowed=names is not None)
        if found:
            problems.append(f"fine-tuned model {index}: " + "; ".join(found))
    if problems:
        raise ConfigError(
            "the fine-tuned models do not match the base model's state dict: "
            + " | ".join(problems) + ". Merge models fine-tuned from the same base run, or "
            "pass keys= naming only the tensors they share (e.g. without per-task heads).")


def merged_names(base: StateDict, finetuned: Sequence[StateDict],
                 keys: Iterable[str] | None) -> list[str]:
    """The names that merge, in base's order: ``keys`` (all of base's when None) whose base
    tensor is floating point and not empty; integer buffers and the rest are copied."""
    if not finetuned:
        raise ConfigError("finetuned is empty: merging needs at least one fine-tuned model")
    wanted = None if keys is None else list(keys)
    check_compatible(base, finetuned, wanted)
    chosen = set(base) if wanted is None else set(wanted)
    return [name for name in base if name in chosen and base[name].is_floating_point()
            and base[name].numel() > 0]


def task_scales(scale: float | Sequence[float], tasks: int) -> list[float]:
    """One scale per task: a float applies to all."""
    if isinstance(scale, (int, float)):
        return [float(scale)] * tasks
    scales = [float(s) for s in scale]
    if len(scales) != tasks:
        raise ConfigError(f"scale has {len(scales)} entries for {tasks} fine-tuned models: "
                          "give one per model, or a single float")
    return scales


def check_fraction(key: str, value: float, *, zero_ok: bool = False, one_ok: bool = True,
                   top: float = 1.0) -> None:
    low_ok = value >= 0 if zero_ok else value > 0
    high_ok = value <= top if one_ok else value < top
    if not (low_ok and high_ok):
        interval = f"{'[' if zero_ok else '('}0, {top:g}{']' if one_ok else ')'}"
        raise ConfigError(f"{key} must be in {interval}, got {value!r}")


def check_choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")


def count_of(fraction: float, size: int) -> int:
    """⌊fraction·size⌋, forgiving float noise (0.9999·20000 lands just under 19998)."""
    return int(fraction * size + 1e-6)


def kept_count(fraction: float, size: int) -> int:
    """How many of ``size`` entries a kept ``fraction`` keeps: at least one, at most all."""
    return min(size, max(1, count_of(fraction, size)))


def work_dtype(tensor: Tensor) -> torch.dtype:
    """Task vectors of half-precision models are computed in float32; float64 stays."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def threshold_groups(names: Sequence[str], thresholds: str) -> list[list[str]]:
    """The sets of tensors that thresholds and normalisations are taken over: the whole model
    (as the official PCB and TIES code flatten it), or each tensor alone."""
    check_choice("thresholds", thresholds, THRESHOLDS)
    if thresholds == "global":
        return [list(names)] if names else []
    return [[name] for name in names]


def drop_mask(shape: torch.Size, p: float, seed: int, task: int, name: str) -> Tensor:
    """DARE's keep mask of one task's tensor, drawn on the CPU (so the same on every device)
    from a generator seeded by (seed, task, tensor name): each mask can be drawn again in any
    pass, and does not depend on which other tensors merge."""
    tensor_seed = derive_seed(seed, task, name)
    generator = torch.Generator().manual_seed(tensor_seed)
    return torch.rand(shape, generator=generator) >= p


@dataclass(frozen=True)
class TaskVectors:
    """τ_i = θ_i − θ₀ of one tensor at a time, on base's device, in float32 (float64 for
    float64 tensors). With ``drop`` = p > 0, DARE's version: each entry dropped with
    probability p and the kept ones rescaled by 1/(1 − p)."""

    base: StateDict
    finetuned: Sequence[StateDict]
    drop: float = 0.0
    seed: int = 0

    def __len__(self) -> int:
        return len(self.finetuned)

    def of(self, task: int, name: str) -> Tensor:
        base = self.base[name]
        dtype = work_dtype(base)
        tau = self.finetuned[task][name].to(device=base.device, dtype=dtype) - base.to(dtype)
        if self.drop:
            keep = drop_mask(tau.shape, self.drop, self.seed, task, name).to(tau.device)
            tau.mul_(keep).div_(1 - self.drop)
        return tau


def finish(base: Tensor, delta: Tensor) -> Tensor:
    """θ₀ + merged task vector, in base's dtype."""
    return (base.to(delta.dtype) + delta).to(base.dtype)


def assemble(base: StateDict, merged: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The output state dict in base's key order: the merged tensors, and copies of the rest
    (integer buffers, keys left out) so that the result never shares memory with base."""
    return {name: merged[name] if name in merged else base[name].clone() for name in base}
