"""Knowledge-distillation terms: MIX-KD's (a KL at T², on standardised logits) and the one of
class-incremental learning (iCaRL/PyCIL: a cross-entropy between softened distributions)."""
from __future__ import annotations

import torch


def standardize_logits(logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide each row by its standard deviation over classes (MIX-KD's logit standardisation),
    so teacher and student are compared at the same scale."""
    return logits / logits.std(dim=-1, keepdim=True).clamp(min=eps)


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    temperature: float, standardize: bool = True) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch (Hinton et al.)."""
    student, teacher = student_logits.float(), teacher_logits.float()
    if standardize:
        student, teacher = standardize_logits(student), standardize_logits(teacher)
    log_p_student = torch.log_softmax(student / temperature, dim=-1)
    log_p_teacher = torch.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1).mean()
    return kl * temperature ** 2


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """-Σ softmax(t/T)·log_softmax(s/T), averaged over the batch: PyCIL's ``_KD_loss`` (no T²
    factor), the distillation of the old model's classes in LwF, iCaRL and WA."""
    teacher = torch.softmax(teacher_logits.float() / temperature, dim=-1)
    log_student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    return -(teacher * log_student).sum(dim=-1).mean()
