"""Teleoperation: the leader arms as an input device, and a bumpless handover onto them.

On CobotMagic the firmware's own leader-follower mode cannot be left without a reset that drops the arm
(docs/references.md §1), so teleop is done in software: the leader arms are read like any sensor and their pose
becomes the follower's target, through the same safety filter as every other command. A handover never jumps: on
entering TELEOP the target slides from the command being sent toward the leader pose at a capped speed, and
follows the leader directly once they agree within a tolerance (the operator may also move the leader to the
follower).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

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
    def __init__(self, limits: SafetyLimits, slide_speed_fraction: float = 0.3, align_tolerance: float = 0.02) -> None:
        if not 0 < slide_speed_fraction <= 1 or align_tolerance <= 0:
            raise ValueError("slide_speed_fraction must be in (0, 1] and align_tolerance positive")
        self.limits = limits
        self.slide_speed = slide_speed_fraction * limits.velocity_max
        self.align_tolerance = align_tolerance
        self._target: np.ndarray | None = None
        self.aligned = False

    def start(self, current_command: np.ndarray) -> None:
        self._target = np.array(current_command, dtype=np.float64, copy=True)
        self.aligned = False

    def target(self, leader: np.ndarray, dt: float) -> np.ndarray:
        """The follower target for this tick: sliding toward the leader until aligned, then the leader itself."""
        if self._target is None:
            raise RuntimeError("start() the handover with the current command before asking for targets")
        if not self.aligned:
            gap = leader - self._target
            if np.max(np.abs(gap)) <= self.align_tolerance:
                self.aligned = True
            else:
                # One factor per arm group keeps the slide a straight line in joint space.
                ratio = np.abs(gap) / (self.slide_speed * dt)
                worst = np.maximum.reduceat(ratio, self.limits.group_starts)[self.limits.group_of_joint]
                self._target = self._target + gap / np.maximum(worst, 1.0)
                return self._target.copy()
        self._target = np.array(leader, dtype=np.float64, copy=True)
        return self._target.copy()
