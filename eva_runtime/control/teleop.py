"""Teleoperation: the leader arms as an input device, and a bumpless handover onto them.

On CobotMagic the firmware's own leader-follower mode cannot be left without a reset that drops the arm
(docs/references.md §1), so teleop is done in software: the leader arms are read like any sensor and their pose
becomes the follower's target, through the same safety filter as every other command. A handover never jumps: on
entering TELEOP the target slides from the command being sent toward the leader pose, ramping its speed up and
down within a fraction of the caps, and follows the leader directly once they agree within a tolerance (the
operator may also move the leader to the follower).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from eva_runtime.control.homing import HomingSlide
from eva_runtime.safety import SafetyLimits

__all__ = ["LeaderArms", "ScriptedLeader", "TeleopHandover"]


class LeaderArms(Protocol):
    def read(self) -> tuple[float, np.ndarray] | None:
        """(stamp on the robot clock, leader joint positions in the embodiment's layout), or None if silent."""

    def takeover(self, progress: int, command: np.ndarray) -> None:
        """Teleop starts now, with the follower at `command` after `progress` ticks of the task."""


class ScriptedLeader:
    """Virtual leader arms moved by a scripted operator (simulation): `pose(now)` gives the leader pose."""

    def __init__(self, clock: Callable[[], float], pose: Callable[[float], np.ndarray]) -> None:
        self.clock = clock
        self.pose = pose
        self.silent = False  # a test switch: the leader stops reporting (a dropped connection)

    def takeover(self, progress: int, command: np.ndarray) -> None:
        pass  # the scripted pose does not depend on where the follower is

    def read(self) -> tuple[float, np.ndarray] | None:
        if self.silent:
            return None
        now = self.clock()
        return now, np.asarray(self.pose(now), dtype=np.float64)


class TeleopHandover:
    """The follower's target while it joins the leader: a ramped slide (speed and acceleration at a fraction of
    the caps, braking onto the leader's pose) that the filter follows exactly, so the arm neither lags the target
    nor overshoots the pose when the slide ends. Once they agree within `align_tolerance` the slide keeps tracking
    the leader at `TRACKING_FRACTION` of the caps (ramped: the operator's hand never makes the filter clamp)."""

    TRACKING_FRACTION = 0.9

    def __init__(self, limits: SafetyLimits, slide_speed_fraction: float = 0.3, align_tolerance: float = 0.02) -> None:
        if not 0 < slide_speed_fraction <= 1 or align_tolerance <= 0:
            raise ValueError("slide_speed_fraction must be in (0, 1] and align_tolerance positive")
        self.limits = limits
        self.slide_speed_fraction = slide_speed_fraction
        self.align_tolerance = align_tolerance
        self._slide: HomingSlide | None = None
        self.aligned = False

    def start(self, current_command: np.ndarray) -> None:
        command = np.array(current_command, dtype=np.float64, copy=True)
        # Slow in speed, brisk in acceleration: the slide gets under way as fast as the filter allows and still
        # brakes onto the leader at a rate the filter can follow.
        self._slide = HomingSlide(self.limits, command, command, self.slide_speed_fraction, self.TRACKING_FRACTION)
        self.aligned = False

    def target(self, leader: np.ndarray, dt: float) -> np.ndarray:
        """The follower target for this tick: the slide toward the leader, which keeps following it once aligned."""
        if self._slide is None:
            raise RuntimeError("start() the handover with the current command before asking for targets")
        slide = self._slide
        slide.pose = np.array(leader, dtype=np.float64, copy=True)  # the leader moves: the slide follows it
        target = slide.target(dt)
        if not self.aligned and np.max(np.abs(slide.pose - target)) <= self.align_tolerance:
            # Joined: from now on the slide tracks the leader at nearly the full caps. A switch to the raw leader
            # pose would leave the last of the gap as a step the filter has to clamp.
            self.aligned = True
            slide.speed = self.TRACKING_FRACTION * self.limits.velocity_max
        return target
