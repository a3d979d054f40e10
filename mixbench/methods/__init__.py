"""Mixing methods (registered in METHODS). One module per family."""
from mixbench.methods import base, sample_mixing  # noqa: F401  (registration)
from mixbench.methods.base import ERM, Method, MixResult, StepOutput
from mixbench.methods.sample_mixing import CutMix, Mixup

__all__ = ["CutMix", "ERM", "Method", "MixResult", "Mixup", "StepOutput"]
