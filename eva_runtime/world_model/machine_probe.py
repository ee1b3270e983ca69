"""How fast this machine runs the planner's kind of work right now: a fixed one-thread torch workload, timed.

Closed-loop success depends on planning latency, and on a shared machine the same model plans in 0.7 s one day
and 1.0 s another. A ladder row that carries this probe, measured just before its episodes, says which of the two
a slow row was: a slower machine (the probe rose with the latency) or a slower model (it did not).
"""

from __future__ import annotations

import statistics
import time

__all__ = ["PROBE_SHAPE", "probe_machine"]

# A transformer block's worth of matrix products at the tiny Wan model's scale (tokens x width x width).
PROBE_SHAPE = (256, 128, 512)


def probe_machine(repeats: int = 7, products: int = 40) -> dict:
    """Median milliseconds of `products` float32 matrix products of PROBE_SHAPE on one torch thread (as the
    planner process runs), over `repeats` timings after one warm-up; the thread count is restored after."""
    import torch

    if repeats < 1 or products < 1:
        raise ValueError(f"repeats and products must be >= 1, got {repeats} and {products}")
    rows, inner, cols = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(rows, inner, generator=generator)
    right = torch.randn(inner, cols, generator=generator)
    back = torch.randn(cols, inner, generator=generator)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timings = []
        for attempt in range(repeats + 1):
            began = time.perf_counter()
            with torch.no_grad():
                for _ in range(products):
                    (left @ right).relu_() @ back
            if attempt:  # the first pass warms the allocator and caches
                timings.append(1000.0 * (time.perf_counter() - began))
    finally:
        torch.set_num_threads(threads)
    return {"milliseconds": statistics.median(timings), "spread_ms": max(timings) - min(timings), "threads": 1}
