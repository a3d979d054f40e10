"""Mixing methods (registered in METHODS). One module per family."""
from mixbench.methods import (alignmix, attentivemix, base, cmixup, comixup,  # noqa: F401
                              dualmix,
                              manifold, mask_mixing, metrix, mixkd, policy, puzzlemix,
                              rankmixup, regmixup, sample_mixing, snapmix,
                              transmix)  # (registration)
from mixbench.methods.alignmix import AlignMix
from mixbench.methods.attentivemix import AttentiveMix
from mixbench.methods.base import ERM, Method, MixResult, StepOutput
from mixbench.methods.cmixup import CMixup
from mixbench.methods.comixup import CoMixup
from mixbench.methods.dualmix import DualMix
from mixbench.methods.manifold import ManifoldMix
from mixbench.methods.mask_mixing import FMix, GridMix, ResizeMix, SaliencyMix, SmoothMix
from mixbench.methods.metrix import Metrix
from mixbench.methods.mixkd import MixKD
from mixbench.methods.policy import AutoMix
from mixbench.methods.puzzlemix import PuzzleMix
from mixbench.methods.rankmixup import RankMixup
from mixbench.methods.regmixup import RegMixup
from mixbench.methods.sample_mixing import CutMix, Mixup, MixupCutMix, SampleMixer
from mixbench.methods.snapmix import SnapMix
from mixbench.methods.transmix import TransMix

__all__ = ["AlignMix", "AttentiveMix", "AutoMix", "CMixup", "CoMixup", "CutMix", "DualMix",
           "ERM", "FMix",
           "GridMix", "ManifoldMix", "Method", "Metrix", "MixKD", "MixResult", "Mixup",
           "MixupCutMix",
           "PuzzleMix", "RankMixup", "RegMixup", "ResizeMix", "SaliencyMix", "SampleMixer",
           "SmoothMix", "SnapMix", "StepOutput", "TransMix"]
