"""Mixing methods (registered in METHODS). One module per family."""
from mixbench.methods import base, cmixup, manifold, regmixup, sample_mixing  # noqa: F401
from mixbench.methods.base import ERM, Method, MixResult, StepOutput
from mixbench.methods.cmixup import CMixup
from mixbench.methods.manifold import ManifoldMix
from mixbench.methods.regmixup import RegMixup
from mixbench.methods.sample_mixing import CutMix, Mixup

__all__ = ["CMixup", "CutMix", "ERM", "ManifoldMix", "Method", "MixResult", "Mixup", "RegMixup",
           "StepOutput"]
