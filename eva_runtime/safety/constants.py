"""What the safety filter derives from its limits, computed once per :class:`SafetyLimits` instead of every tick.

A 14-joint tick is dominated by per-call overhead, not arithmetic: a numpy call costs far more than its work on
fourteen values, and more again with a Python scalar operand or one broadcast over rows. So the filter keeps its
operands as ready arrays of the shape each operation needs, and answers any()/all() on masks from their bytes
instead of a numpy reduction.

Every value here is computed with exactly the expressions the filter used to evaluate per tick, so results stay
bit for bit the same. Nothing here is mutated after construction (the arrays are read-only), so one instance is
safely shared by every filter and thread using the same limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from eva_runtime.safety.limits import SafetyLimits

__all__ = ["FilterConstants"]


def _frozen(values: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    array = np.array(values, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


class FilterConstants:
    """Read-only operands of :func:`~eva_runtime.safety.filter.filter_step` for one set of limits."""

    __slots__ = (
        "acceleration_rows",
        "all_bytes",
        "all_joints",
        "arm_names",
        "arm_of_joint",
        "dof",
        "group_of_joint",
        "group_ones",
        "group_starts",
        "hard_high",
        "hard_low",
        "joint_names",
        "no_bytes",
        "soft_high",
        "soft_low",
        "tracking_error_max",
        "two_acceleration_rows",
        "velocity_max",
        "zero_rows",
    )

    def __init__(self, limits: SafetyLimits) -> None:
        self.dof = limits.dof
        self.joint_names = limits.joint_names
        self.arm_names = limits.arm_names
        self.soft_low = _frozen(limits.soft_low)
        self.soft_high = _frozen(limits.soft_high)
        self.hard_low = _frozen(limits.hard_low)
        self.hard_high = _frozen(limits.hard_high)
        self.velocity_max = _frozen(limits.velocity_max)
        # Braking bounds are computed on 2 or 3 stacked rows at once (see motion.py), with operands of that shape:
        # numpy broadcasts a (dof,) operand over rows through a path about three times slower.
        self.acceleration_rows = {rows: _frozen(np.tile(limits.acceleration_max, (rows, 1))) for rows in (2, 3)}
        # braking_speed's 2 * a, in the order it multiplies it (2.0 * a first).
        self.two_acceleration_rows = {rows: _frozen(2.0 * self.acceleration_rows[rows]) for rows in (2, 3)}
        self.zero_rows = {rows: _frozen(np.zeros((rows, self.dof))) for rows in (2, 3)}
        self.tracking_error_max = _frozen(limits.tracking_error_max)
        self.arm_of_joint = _frozen(limits.arm_of_joint, np.intp)
        self.group_starts = _frozen(limits.group_starts, np.intp)
        self.group_of_joint = _frozen(limits.group_of_joint, np.intp)
        self.all_joints = _frozen(np.ones(self.dof, dtype=bool), bool)
        # Array operands: a Python scalar costs a conversion on every call.
        self.group_ones = _frozen(np.ones(len(self.group_starts)))
        # A boolean mask's bytes against these answer any()/all() without a numpy reduction (the costliest call).
        self.all_bytes = self.all_joints.tobytes()
        self.no_bytes = bytes(self.dof)

    def group_scale(self, ratio: np.ndarray) -> np.ndarray:
        """Per-joint factor <= 1 that brings every group's largest ratio to at most 1."""
        worst = np.maximum.reduceat(ratio, self.group_starts)
        return (self.group_ones / np.maximum(worst, self.group_ones))[self.group_of_joint]

    def braking_speed(self, distance: np.ndarray, step_caps: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """:func:`~eva_runtime.safety.braking.braking_speed` on 2 or 3 stacked rows, given a*dt and its square."""
        rows = len(distance)
        reach = self.two_acceleration_rows[rows] * np.maximum(distance, self.zero_rows[rows])
        return reach / (np.sqrt(squares + reach) + step_caps)
