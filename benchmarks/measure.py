"""Timing and memory helpers shared by the benchmarks (run them from the repository root)."""

from __future__ import annotations

import os
import resource
import time
from typing import Callable


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (it only grows), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def interleaved(runs: dict[str, Callable[[], object]], repeats: int
                ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float]]:
    """Wall and process CPU times in seconds of `repeats` rounds, each round calling every run once in order, so that
    a change of load on a shared machine falls on all of them alike; and each run's peak resident memory after its
    first call. On one thread, CPU time is the work done, which other jobs on a shared machine disturb far less than
    the wall time."""
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, float] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            peaks.setdefault(name, peak_rss_gib())
    return wall, cpu, peaks


def load() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
