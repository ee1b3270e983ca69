"""Timing helper shared by the benchmarks: median milliseconds per call over repeated calls."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def median_ms(function: Callable[[], object], repeats: int) -> float:
    """Call once to warm up (caches, lazy renderers, torch.compile), then time `repeats` calls."""
    function()
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        samples.append(time.perf_counter() - began)
    return float(np.median(samples) * 1e3)
