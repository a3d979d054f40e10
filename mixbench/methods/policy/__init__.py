"""Learned mixing policies: methods that train their own modules (a mask generator, an EMA
copy of the classifier) next to the classifier. ``LearnedPolicy`` is their shared base."""
from mixbench.methods.policy import adamixup, adautomix, automix, samix  # noqa: F401  (registration)
from mixbench.methods.policy.adamixup import AdaMixUp
from mixbench.methods.policy.adautomix import AdAutoMix
from mixbench.methods.policy.automix import AutoMix
from mixbench.methods.policy.learned import LearnedPolicy
from mixbench.methods.policy.samix import SAMix

__all__ = ["AdAutoMix", "AdaMixUp", "AutoMix", "LearnedPolicy", "SAMix"]
