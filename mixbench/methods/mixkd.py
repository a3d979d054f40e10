"""MIX-KD (Choi et al., WACV 2023): knowledge distillation on partially mixed batches.

A frozen teacher sees the same (partly mixed) batch as the student; the loss is
``ce_weight · loss(student, mixed targets) + kl_weight · T² · KL(teacher ‖ student)`` with both
logits standardised (divided by their std over classes) before the temperature.

The teacher is a mixbench run (its folder or its ``last.pt``): its backbone is rebuilt from the
config saved in the checkpoint, with this dataset's class count and input channels. It is
frozen, in eval mode, and moved to the batch's device. It is not saved in the student's
checkpoints - they only hold the teacher file's SHA-256, and resuming re-loads the teacher from
``teacher_ckpt`` and refuses if the file changed."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixbench.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from mixbench.errors import CheckpointError, ConfigError
from mixbench.losses.distill import distillation_kl
from mixbench.methods.base import Method, MixResult, StepOutput, check_batch
from mixbench.methods.sample_mixing import host_to, mix_targets, per_sample
from mixbench.registry import BACKBONES, METHODS


def require_teacher_ckpt(teacher_ckpt) -> None:
    if teacher_ckpt in (None, ""):
        raise ConfigError("method=mixkd needs method.teacher_ckpt=PATH: the run folder (or its "
                          f"{CHECKPOINT_NAME}) of a model trained on the same dataset")


def teacher_file(teacher_ckpt) -> Path:
    require_teacher_ckpt(teacher_ckpt)
    path = Path(teacher_ckpt).expanduser()
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"method.teacher_ckpt: no checkpoint at {path}. Train the teacher "
                          f"first (tools/train.py) and point to its run folder.")
    return path


def load_teacher(teacher_ckpt, num_classes: int, in_channels: int) -> nn.Module:
    """The frozen teacher, rebuilt from the config saved in its checkpoint."""
    path = teacher_file(teacher_ckpt)
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise ConfigError(f"method.teacher_ckpt: {err}") from err
    backbone_cfg = (state.get("config") or {}).get("backbone")
    if not backbone_cfg:
        raise ConfigError(f"method.teacher_ckpt: {path} holds no config to rebuild the teacher")
    weights = state["model"]
    head = weights.get("head.weight")
    if head is not None and head.shape[0] != num_classes:
        raise ConfigError(f"method.teacher_ckpt: the teacher in {path} has {head.shape[0]} "
                          f"classes but this dataset has {num_classes}: distil from a teacher "
                          f"trained on the same dataset")
    teacher = BACKBONES.build(backbone_cfg, num_classes=num_classes, in_channels=in_channels)
    try:
        teacher.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(f"method.teacher_ckpt: the weights in {path} do not fit a "
                          f"{backbone_cfg.get('name')} with {num_classes} classes and "
                          f"{in_channels} input channels: {str(err)[:300]}") from err
    return teacher.eval().requires_grad_(False)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@METHODS.register("mixkd")
class MixKD(Method):
    tasks = ("classification",)

    def __init__(self, *, num_classes: int, teacher_ckpt: str | None = None,
                 mix_fraction: float = 0.1, alpha: float = 1.0, temperature: float = 4.0,
                 ce_weight: float = 0.1, kl_weight: float = 0.9, standardize: bool = True):
        super().__init__(num_classes=num_classes)
        # The file is looked for in setup(), before training: re-evaluating or analysing a
        # finished student builds the method too, and must not need the teacher any more.
        require_teacher_ckpt(teacher_ckpt)
        self.teacher_ckpt = teacher_ckpt
        if not 0.0 <= mix_fraction <= 1.0:
            raise ConfigError(f"method.mix_fraction must be in [0, 1], got {mix_fraction}")
        if not alpha > 0:
            raise ConfigError(f"method.alpha must be > 0 (Beta(alpha, alpha)), got {alpha}")
        if not temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {temperature}")
        if not (ce_weight >= 0 and kl_weight >= 0):
            raise ConfigError(f"method.ce_weight and method.kl_weight must be >= 0, got "
                              f"{ce_weight} and {kl_weight}")
        self.mix_fraction, self.alpha = float(mix_fraction), float(alpha)
        self.temperature, self.standardize = float(temperature), bool(standardize)
        self.ce_weight, self.kl_weight = float(ce_weight), float(kl_weight)
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))
        self.teacher: nn.Module | None = None  # set by setup() (or directly, in tests)
        self.teacher_sha256: str | None = None

    def setup(self, data, train_loader) -> None:
        path = teacher_file(self.teacher_ckpt)
        self.teacher = load_teacher(path, self.num_classes, data.in_channels)
        self.teacher_sha256 = file_sha256(path)

    def mix_batch(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        """Partial mixup: exactly round(mix_fraction · B) samples, chosen at random, are mixed
        with a random partner (λ ~ Beta(α, α) each); the others stay as they are (λ = 1)."""
        check_batch(x, y, self.num_classes)
        b = x.shape[0]
        lam = torch.ones(b)
        chosen = torch.randperm(b)[:round(self.mix_fraction * b)]
        lam[chosen] = self._beta.sample((len(chosen),))
        perm = torch.randperm(b, device=x.device)
        lam_on_device = host_to(lam, y)  # queued, not waited for
        return MixResult(torch.lerp(x[perm], x, per_sample(lam_on_device, x)),
                         mix_targets(y, perm, lam_on_device), lam)

    def step(self, model, batch, loss_fn) -> StepOutput:
        if self.teacher is None:
            raise RuntimeError("MixKD.setup() loads the teacher; call it before step()")
        x, labels = batch[0], batch[1]
        mixed = self.mix_batch(x, self.targets(labels, x.dtype))
        logits = model(mixed.x)
        if next(self.teacher.parameters()).device != x.device:
            self.teacher.to(x.device)
        with torch.no_grad():
            teacher_logits = self.teacher(mixed.x)
        kl = distillation_kl(logits, teacher_logits, self.temperature, self.standardize)
        loss = self.ce_weight * loss_fn(logits, mixed.y) + self.kl_weight * kl
        return StepOutput(loss, logits, {"lam": mixed.lam, "kl": kl.detach()})

    # Only the teacher's fingerprint: the teacher itself is re-loaded from teacher_ckpt.
    def state_dict(self) -> dict[str, Any]:
        return {"teacher_sha256": self.teacher_sha256} if self.teacher_sha256 else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("teacher_sha256")
        if saved and self.teacher_sha256 and saved != self.teacher_sha256:
            raise CheckpointError(f"the teacher {self.teacher_ckpt} changed since this run "
                                  f"started (SHA-256 differs): resume with the original teacher "
                                  f"or start a new run")

    def __repr__(self) -> str:
        return (f"MixKD(teacher={str(self.teacher_ckpt)!r}, mix_fraction={self.mix_fraction}, "
                f"alpha={self.alpha}, T={self.temperature}, ce_weight={self.ce_weight}, "
                f"kl_weight={self.kl_weight}, standardize={self.standardize})")
