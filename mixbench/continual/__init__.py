"""Continual learning: classes arriving in steps (class-incremental) or as a stream (online).
The protocols are in ``mixbench.protocols``; here are their parts."""
from mixbench.continual.head import weight_align
from mixbench.continual.metrics import continual_metrics

__all__ = ["continual_metrics", "weight_align"]
