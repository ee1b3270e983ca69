"""Braking bound: the fastest speed toward a limit from which the joint can still stop before reaching it.

Moving at speed ``v`` for one tick of length ``dt`` and then decelerating at ``a`` covers at most
``v * dt + v**2 / (2 * a)``: the continuous stopping distance bounds every discrete stop, whatever tick lengths
follow. Keeping that sum within the distance to the limit at every tick is therefore an invariant the next
tick can always keep with a deceleration of at most ``a`` (it needs no assumption that ticks are regular).
"""

from __future__ import annotations

import numpy as np

__all__ = ["braking_speed"]


def braking_speed(distance: np.ndarray, acceleration_max: np.ndarray, dt: float) -> np.ndarray:
    """Largest ``v >= 0`` with ``v * dt + v**2 / (2 * acceleration_max) <= distance`` (0 where distance <= 0)."""
    a_dt = acceleration_max * dt
    reach = 2.0 * acceleration_max * np.maximum(distance, 0.0)
    # The root of v**2 + 2*a*dt*v - 2*a*d written without the cancellation of sqrt(x**2 + y) - x.
    return reach / (np.sqrt(a_dt * a_dt + reach) + a_dt)
