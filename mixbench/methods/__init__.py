"""Mixing methods (registered in METHODS). One module per family."""
from mixbench.methods import (attentivemix, base, cmixup, manifold, puzzlemix,  # noqa: F401
                              regmixup, sample_mixing, snapmix)  # (registration)
from mixbench.methods.attentivemix import AttentiveMix
from mixbench.methods.base import ERM, Method, MixResult, StepOutput
from mixbench.methods.cmixup import CMixup
from mixbench.methods.manifold import ManifoldMix
from mixbench.methods.puzzlemix import PuzzleMix
from mixbench.methods.regmixup import RegMixup
from mixbench.methods.sample_mixing import CutMix, Mixup
from mixbench.methods.snapmix import SnapMix

__all__ = ["AttentiveMix", "CMixup", "CutMix", "ERM", "ManifoldMix", "Method", "MixResult",
           "Mixup", "PuzzleMix", "RegMixup", "SnapMix", "StepOutput"]
