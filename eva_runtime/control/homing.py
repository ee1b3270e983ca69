"""The homing slide: a straight, ramped path to a pose that the safety filter can follow exactly."""

from __future__ import annotations

import numpy as np

from eva_runtime.safety import SafetyLimits
from eva_runtime.safety.braking import braking_speed

__all__ = ["HomingSlide"]


class HomingSlide:
    """A homing target: a straight line (per arm) from the current command to a pose, at a fraction of the speed
    caps, speeding up and slowing down at the same fraction of the acceleration caps. The filter then follows it
    exactly: a target that started at full speed would make the filter catch up faster than the slide speed, and
    one that stopped dead would leave the filter moving and overshoot the pose by v^2 / 2a."""

    SNAP = 1e-4  # rad: the last bit is one step (braking alone approaches the pose only asymptotically)

    def __init__(
        self,
        limits: SafetyLimits,
        start: np.ndarray,
        pose: np.ndarray,
        speed_fraction: float,
        acceleration_fraction: float | None = None,
    ) -> None:
        acceleration_fraction = speed_fraction if acceleration_fraction is None else acceleration_fraction
        if not (0 < speed_fraction <= 1 and 0 < acceleration_fraction <= 1):
            raise ValueError(f"homing speed and acceleration fractions must be in (0, 1], got {speed_fraction}")
        self.limits = limits
        self.pose = np.array(pose, dtype=np.float64, copy=True)
        self.position = np.array(start, dtype=np.float64, copy=True)
        self.speed = speed_fraction * limits.velocity_max
        self.acceleration = acceleration_fraction * limits.acceleration_max
        self._step = np.zeros_like(self.position)  # last step per joint: the ramp starts from rest

    @property
    def arrived(self) -> bool:
        return bool(np.array_equal(self.position, self.pose))

    def target(self, dt: float) -> np.ndarray:
        gap = self.pose - self.position
        if np.max(np.abs(gap)) <= self.SNAP:
            self.position = self.pose.copy()
            return self.position.copy()
        speed = np.minimum(self.speed, braking_speed(np.abs(gap), self.acceleration, dt))
        allowed = np.minimum(speed * dt, self._step + self.acceleration * dt * dt)
        ratio = np.abs(gap) / np.maximum(allowed, 1e-12)
        # One factor per group keeps each arm's path a straight line in joint space.
        worst = np.maximum.reduceat(ratio, self.limits.group_starts)[self.limits.group_of_joint]
        step = gap / np.maximum(worst, 1.0)
        self._step = np.abs(step)
        self.position = self.position + step
        return self.position.copy()
