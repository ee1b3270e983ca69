"""When the safety filter may be re-seeded from a joint reading: the precondition of leaving ESTOP or FAULT.

A re-seed puts the command where the arm was measured. That is no jump only if the arm is still there when the
command goes out: the reading must be fresh and the arm at rest. The rest bound follows from the freshness bound:
an arm joint moving at `velocity_max * period / max_age` has moved at most one tick of its velocity cap since a
reading `max_age` old, so the seed lands within one capped step of the arm (0.53 rad/s for the Piper joints at
50 Hz and a 0.1 s joint-state timeout). An arm moving faster than that was thrown by something other than this
runtime's commands (a collision, a person, the simulator resolving a contact): the chaos soak saw seeds 0.2-0.85
rad from the arm's next reading. Grippers are exempt: their seed is their last command, not their reading
(`SafetyFilter.reseed`).
"""

from __future__ import annotations

import numpy as np

from eva_runtime.robots.interface import Observation
from eva_runtime.safety.limits import SafetyLimits


def rest_speed(limits: SafetyLimits, period: float, max_age: float) -> np.ndarray:
    """Per joint, the speed below which a reading `max_age` old is within one capped tick of the arm."""
    return limits.velocity_max * period / max_age


def reseed_problem(
    measured: Observation, age: float, limits: SafetyLimits, period: float, max_age: float
) -> str | None:
    """Why the filter may not be re-seeded from `measured` (read `age` seconds ago), or None. A robot that reports
    no joint velocity is checked for freshness alone."""
    if not age <= max_age:
        return f"joint state is {age:.2f} s old: the safety filter cannot be re-seeded from it"
    if measured.joint_velocity is None:
        return None
    speed = np.abs(np.asarray(measured.joint_velocity, dtype=np.float64))
    bound = rest_speed(limits, period, max_age)
    excess = np.where(limits.is_gripper, 0.0, np.nan_to_num(speed / bound, nan=np.inf))
    joint = int(np.argmax(excess))
    if excess[joint] <= 1.0:
        return None
    return (
        f"arm not at rest: {limits.joint_names[joint]} moving at {speed[joint]:.2f} rad/s (a re-seed needs at most "
        f"{bound[joint]:.2f}); wait for it to settle"
    )
