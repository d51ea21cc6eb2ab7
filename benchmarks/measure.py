"""Timing and memory helpers shared by the benchmarks (run them from the repository root)."""

from __future__ import annotations

import os
import resource
import time
from typing import Callable


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (it only grows), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Wall times in seconds of `repeats` rounds, each round calling every run once in order, so that a change of
    load on a shared machine falls on all of them alike; and each run's peak resident memory after its first call."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, float] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
            peaks.setdefault(name, peak_rss_gib())
    return times, peaks


def load() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
