"""Model merging: one state dict from N models fine-tuned from the same base θ₀, as θ₀ plus a
merged task vector (τ_i = θ_i − θ₀). Pure tensor code on state dicts: task arithmetic,
TIES-merging, DARE and PCB-merging.

Thresholds are taken over the whole flattened model by default (``thresholds="global"``, as
the official code does) or per tensor; merging runs tensor by tensor, so the peak memory is the
N + 2 state dicts plus about one model's worth of work buffer. ``keys`` restricts merging to
some tensors (e.g. to leave per-task heads out); the others, and integer buffers, are copied
from the base."""
from mixbench.merging.mergers import dare, task_arithmetic, ties_merging
from mixbench.merging.pcb import pcb_merging, pcb_scores
from mixbench.merging.task_vectors import check_compatible

__all__ = ["check_compatible", "dare", "pcb_merging", "pcb_scores", "task_arithmetic",
           "ties_merging"]
