"""The executor's tracker: the plan's curve followed within a share of the joints' caps, before the safety filter.

The B-spline through a plan's actions is smooth, but not slow: a decoded gripper closes faster than its 2.0 /s
cap, a junction between two plans bends faster than the acceleration cap allows. Without a tracker the safety
filter reshapes that motion on about one joint-tick in eight (docs/control.md), so its counts stop pointing at
real faults and the robot executes something other than the plan the reward scored. Vendors' controllers put
an interpolator in front of the arm for this; here the tracker plays that part, and the filter stays the net.

It is the filter's own motion arithmetic (position clamp, velocity and acceleration caps scaled per group so an
arm keeps its direction, the stopping-distance bound, and the correction of a lag without overshoot: :func:`
eva_runtime.safety.filter.filter_step`) run on limits whose velocity and acceleration caps are `headroom` of the
real ones and whose position range is the hard range. So:
- its output stays within headroom x the caps, and the filter, which allows the full caps, has nothing to change
  in nominal motion (`tests/test_cap_tracker.py` checks that over random plans);
- a target beyond the soft position range still reaches the filter as asked, and the filter's clamp counts it:
  a plan that reaches for a limit is a fault worth seeing, not smoothing;
- a target with a non-finite value passes untouched, so the filter holds the arm and the modes hear of it.

It starts from the command the filter last sent (its position and velocity), never from its own output, so
whatever the filter changed, the tracker continues from what the robot was given. A tick it did not follow (a
hold, teleop, homing) makes it start afresh there.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from types import MappingProxyType

import numpy as np

from eva_runtime.safety import FilterState
from eva_runtime.safety.filter import FilterRequest, filter_step
from eva_runtime.safety.limits import SafetyLimits

__all__ = ["CapTracker", "checked_headroom", "tracker_limits"]


def checked_headroom(headroom: float, name: str = "the tracker's headroom") -> float:
    """`headroom` if it is a share of the caps in (0, 1] (NaN is not), else a ValueError naming `name`."""
    if not 0.0 < headroom <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {headroom!r}")
    return headroom


def tracker_limits(limits: SafetyLimits, headroom: float) -> SafetyLimits:
    """The limits the tracker moves under: `headroom` of the velocity and acceleration caps, the hard range."""
    checked_headroom(headroom)
    return dataclasses.replace(
        limits,
        velocity_max=limits.velocity_max * headroom,
        acceleration_max=limits.acceleration_max * headroom,
        soft_low=limits.hard_low,
        soft_high=limits.hard_high,
        timeouts_s=MappingProxyType({}),
    )


class CapTracker:
    """Follows one target per tick within headroom x the caps; remembers only its own last target."""

    def __init__(self, limits: SafetyLimits, headroom: float) -> None:
        self.limits = tracker_limits(limits, headroom)
        self.headroom = headroom
        self._target: np.ndarray | None = None  # the last target it was given (clamped to the hard range)
        self._time: float | None = None  # the tick it was given for

    def follow(self, time: float, target: np.ndarray, sent: FilterState, changes: Counter | None = None) -> np.ndarray:
        """The command to ask the filter for at `time`; what the tracker changed is added to `changes` per check
        (joints x checks, as the filter counts its interventions).

        `sent` is the filter's state after the last tick (the command the robot was given and its velocity)."""
        target = np.asarray(target, dtype=np.float64)
        if not np.all(np.isfinite(target)):
            self._target = self._time = None
            return target
        last = self._target if self._time == sent.time and self._target is not None else sent.command
        start = FilterState(time=sent.time, command=sent.command, velocity=sent.velocity, target=last)
        result = filter_step(self.limits, start, FilterRequest(time=time, target=target))
        self._target, self._time = result.state.target, float(time)
        if changes is not None and result.interventions:
            changes.update(result.interventions.counts())
        return result.command
