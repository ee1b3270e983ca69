"""The bounds every filter output must satisfy, checked on one tick's transition (used by tests and the soak).

Given the state before a tick, the state after it and the request's time, the applied command must be finite;
inside the soft position range (or no further out than the previous command, for a joint seeded inside the
margin band); within the hard range; its step within the velocity cap over the tick interval the filter used;
the change of its velocity within the acceleration cap; and the reported velocity must be the step it took.
"""

from __future__ import annotations

import numpy as np

from eva_runtime.safety.filter import MIN_TICK_INTERVAL_S, FilterState
from eva_runtime.safety.limits import SafetyLimits

__all__ = ["transition_violations"]

TOLERANCE = 1e-9


def transition_violations(
    limits: SafetyLimits, before: FilterState, after: FilterState, request_time: float
) -> list[str]:
    """Return a description of every bound the transition breaks (empty when it is safe)."""
    problems: list[str] = []
    interval = request_time - before.time
    if not interval >= MIN_TICK_INTERVAL_S:
        if after is not before and not (
            np.array_equal(after.command, before.command) and np.array_equal(after.velocity, before.velocity)
        ):
            problems.append(f"time did not advance ({interval!r}) but the command changed")
        return problems
    dt = min(interval, limits.max_tick_interval_s)
    command, previous = after.command, before.command
    if command.shape != previous.shape or not np.all(np.isfinite(command)) or not np.all(np.isfinite(after.velocity)):
        return [f"non-finite or misshaped command {command!r}"]

    def name(mask: np.ndarray) -> list[str]:
        return [limits.joint_names[i] for i in np.flatnonzero(mask)]

    low = np.minimum(limits.soft_low, previous) - TOLERANCE
    high = np.maximum(limits.soft_high, previous) + TOLERANCE
    outside = (command < low) | (command > high)
    if outside.any():
        problems.append(f"position outside the soft range: {name(outside)}")
    hard = (command < np.minimum(limits.hard_low, previous) - TOLERANCE) | (
        command > np.maximum(limits.hard_high, previous) + TOLERANCE
    )
    if hard.any():
        problems.append(f"position outside the hard range: {name(hard)}")
    step = np.abs(command - previous)
    fast = step > limits.velocity_max * dt + TOLERANCE
    if fast.any():
        problems.append(f"step above the velocity cap: {name(fast)}")
    jerky = np.abs(after.velocity - before.velocity) > limits.acceleration_max * dt + TOLERANCE
    if jerky.any():
        problems.append(f"velocity change above the acceleration cap: {name(jerky)}")
    lying = np.abs(after.velocity * dt - (command - previous)) > TOLERANCE
    if lying.any():
        problems.append(f"reported velocity is not the step taken: {name(lying)}")
    return problems
