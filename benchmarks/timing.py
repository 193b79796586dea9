"""Timing helper shared by the benchmark scripts (run them as `python benchmarks/<script>.py`)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best(fn: Callable[[], object], repeat: int, warm_up: bool = False) -> float:
    """The fastest of ``repeat`` runs of ``fn`` in seconds: the least disturbed run on a noisy
    machine. ``warm_up`` runs it once first, untimed (sessions, FFT plans, caches)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
