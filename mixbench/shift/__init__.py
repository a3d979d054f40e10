"""Test-time distribution shift: image corruptions, the CIFAR-10-C/100-C reader, and the
orders in which test-time adaptation sees its test samples."""
from mixbench.shift.cifar_c import read_cifar_c
from mixbench.shift.corruptions import CORRUPTIONS, PARAMETERS, corrupt, corrupt_with
from mixbench.shift.streams import (Stream, continual, dirichlet_chunks, dirichlet_order,
                                    iid_order, mixed)

__all__ = ["CORRUPTIONS", "PARAMETERS", "Stream", "continual", "corrupt", "corrupt_with",
           "dirichlet_chunks", "dirichlet_order", "iid_order", "mixed", "read_cifar_c"]
