"""Protocols (registered in PROTOCOLS): the shapes a run can take. ``standard`` fits once and
evaluates once; ``class_incremental`` and ``online`` learn classes arriving over time
(docs/continual.md); ``experts`` and ``distill`` distil a dataset by trajectory matching
(docs/distillation.md). See docs/architecture.md for how to add one."""
from mixbench.protocols import (class_incremental, distill, experts, online,  # noqa: F401
                                retrieval, standard)  # (registration)
from mixbench.protocols.base import Protocol
from mixbench.protocols.standard import Standard

__all__ = ["Protocol", "Standard"]
