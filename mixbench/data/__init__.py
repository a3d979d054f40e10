"""Datasets (registered in DATASETS) and the loaders that batch them."""
from mixbench.data import (digits, imagefolder, regression, retrieval, views,  # noqa: F401
                           vision)  # (registration)
from mixbench.data.bundle import Augment, DataBundle, Split
from mixbench.data.loaders import InMemoryLoader, make_loader

__all__ = ["Augment", "DataBundle", "InMemoryLoader", "Split",
           "make_loader"]
