"""Test-time adaptation: normalisation layers that adapt to the test stream."""
from mixbench.tta.unmix_tns import UnMixTNS2d, replace_bn

__all__ = ["UnMixTNS2d", "replace_bn"]
