"""SafetyFilter: the stateful handle around :func:`filter_step` that a control loop keeps for one robot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from eva_runtime.safety.filter import FilterRequest, FilterResult, FilterState, filter_step, reset_state
from eva_runtime.safety.limits import SafetyLimits

if TYPE_CHECKING:
    from eva_runtime.embodiment import Embodiment

__all__ = ["SafetyFilter"]


class SafetyFilter:
    """Keeps the filter state between ticks. It must be seeded from the measured state before the first step."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self._state: FilterState | None = None
        # (time, measured, seed) of the newest `reseed`: what a re-seed started from, for ~/status and the soak
        self.last_reseed: tuple[float, np.ndarray, np.ndarray] | None = None

    @classmethod
    def for_embodiment(cls, embodiment: Embodiment) -> SafetyFilter:
        return cls(SafetyLimits.from_embodiment(embodiment))

    @property
    def state(self) -> FilterState:
        if self._state is None:
            raise RuntimeError("the safety filter has not been seeded: call reset() with the measured state first")
        return self._state

    @property
    def fault(self) -> str | None:
        return None if self._state is None else self._state.fault

    def reset(self, time: float, measured: np.ndarray, measured_velocity: np.ndarray | None = None) -> None:
        """Re-seed from the measured state; clears a latched fault (an operator decision, never automatic)."""
        self._state = reset_state(self.limits, time, measured, measured_velocity)

    def reseed(self, time: float, measured: np.ndarray, period: float) -> None:
        """Re-seed after ESTOP or FAULT. Arm joints start from the measured pose, moved into the hard range by at
        most one tick of the velocity cap (an arm may have been moved while nobody commanded it, and a seed is
        never a jump). Grippers keep their last command, clipped into their range: a gripper's measured opening is
        not where its command was while it squeezes an object (the simulated gripper reads 1.09 with the command
        at 0.07, or -0.24 with a fingertip on the cube's edge), so seeding from it would open the grip and drop
        the object, or start outside the range, where a hold would keep it, since the filter never pulls a command
        inward on its own."""
        limits, measured = self.limits, np.asarray(measured, dtype=np.float64)
        inward = np.clip(measured, limits.hard_low, limits.hard_high) - measured  # NaN stays NaN: reset refuses it
        bound = limits.velocity_max * period
        seed = measured + np.clip(inward, -bound, bound)
        if self._state is not None:
            kept = np.clip(self._state.command, limits.hard_low, limits.hard_high)
            seed = np.where(limits.is_gripper & np.isfinite(measured), kept, seed)
        self.reset(time, seed)
        self.last_reseed = (float(time), measured.copy(), seed)

    def restore(self, state: FilterState) -> None:
        """Continue from a state saved earlier (e.g. a simulation copy that must behave like the live loop)."""
        self._state = state

    def step(
        self,
        time: float,
        target: np.ndarray | None,
        measured: np.ndarray | None = None,
        input_stamps: Mapping[str, float] | None = None,
    ) -> FilterResult:
        request = FilterRequest(time=time, target=target, measured=measured, input_stamps=input_stamps or {})
        result = filter_step(self.limits, self.state, request)
        self._state = result.state
        return result
