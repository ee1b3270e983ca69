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
        """Re-seed after ESTOP or FAULT from the measured pose, moved into the hard range by at most one tick of the
        velocity cap. A gripper pressed past its range by the object it holds (measured 0.062 against a range from
        0.065) would otherwise be seeded outside, and the filter, which never pulls a command inward on its own,
        would keep commanding outside the range."""
        limits, measured = self.limits, np.asarray(measured, dtype=np.float64)
        inward = np.clip(measured, limits.hard_low, limits.hard_high) - measured  # NaN stays NaN: reset refuses it
        bound = limits.velocity_max * period
        self.reset(time, measured + np.clip(inward, -bound, bound))

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
