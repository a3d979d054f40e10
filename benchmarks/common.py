"""What every benchmark script shares: a quiet allocator and median timings."""
from __future__ import annotations

import ctypes
import statistics
import time


def quiet_malloc() -> None:
    """Keep glibc from returning fresh buffers to the OS on every call (page faults would
    otherwise dominate CPU timings of small tensor ops)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def median_ms(fn, repeats: int, sync=lambda: None) -> float:
    """Median wall time of ``fn()`` in milliseconds after one warm-up call; ``sync`` waits for
    queued device work (e.g. torch.cuda.synchronize) so it is counted."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
