"""Success rates with Wilson score intervals (the interval that stays honest at 0 %, 100 % and small n), and the
normal-approximation interval of a mean (per-seed or per-plan differences)."""

from __future__ import annotations

import math

__all__ = ["mean_interval", "wilson_interval"]


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for a binomial proportion; 95 % by default."""
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} must lie in [0, {trials}]")
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95 % normal-approximation confidence interval (NaN bounds for n < 2)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, mean - half, mean + half
