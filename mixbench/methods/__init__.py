"""Mixing methods (registered in METHODS). One module per family."""
from mixbench.methods import base, cmixup, mask_mixing, sample_mixing  # noqa: F401  (registration)
from mixbench.methods.base import ERM, Method, MixResult, StepOutput
from mixbench.methods.cmixup import CMixup
from mixbench.methods.mask_mixing import FMix, GridMix, ResizeMix, SaliencyMix, SmoothMix
from mixbench.methods.sample_mixing import CutMix, Mixup, MixupCutMix, SampleMixer

__all__ = ["CMixup", "CutMix", "ERM", "FMix", "GridMix", "Method", "MixResult", "Mixup",
           "MixupCutMix", "ResizeMix", "SaliencyMix", "SampleMixer", "SmoothMix", "StepOutput"]
