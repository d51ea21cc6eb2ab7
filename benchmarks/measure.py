"""Timing and memory helpers shared by the benchmarks (run them from the repository root)."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Callable


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (it only grows), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
