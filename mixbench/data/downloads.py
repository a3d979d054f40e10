"""Downloads under DDP: one process per machine fetches while the others wait, so ranks never
write the same files at once."""
from __future__ import annotations

import os
from typing import Callable

import torch.distributed as dist


def download_once(fetch: Callable[[], object]) -> None:
    """Run ``fetch`` here if this is a single process, or in the local rank 0 of each machine
    while the other ranks wait at a barrier (they then read what it wrote)."""
    if not (dist.is_available() and dist.is_initialized()):
        fetch()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    failure = None
    if local_rank == 0:
        try:
            fetch()
        except Exception as err:  # the others must still reach the barrier
            failure = err
    dist.barrier()
    if failure is not None:
        raise failure
