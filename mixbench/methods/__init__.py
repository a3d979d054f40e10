"""Mixing methods (registered in METHODS). One module per family."""
from mixbench.methods import base, cmixup, sample_mixing  # noqa: F401  (registration)
from mixbench.methods.base import ERM, Method, MixResult, StepOutput
from mixbench.methods.cmixup import CMixup
from mixbench.methods.sample_mixing import CutMix, Mixup

__all__ = ["CMixup", "CutMix", "ERM", "Method", "MixResult", "Mixup", "StepOutput"]
