"""Mixing methods (registered in METHODS). One module per family."""
from mixbench.methods import base, cmixup, mixkd, rankmixup, sample_mixing  # noqa: F401
from mixbench.methods.base import ERM, Method, MixResult, StepOutput
from mixbench.methods.cmixup import CMixup
from mixbench.methods.mixkd import MixKD
from mixbench.methods.rankmixup import RankMixup
from mixbench.methods.sample_mixing import CutMix, Mixup

__all__ = ["CMixup", "CutMix", "ERM", "Method", "MixKD", "MixResult", "Mixup", "RankMixup",
           "StepOutput"]
