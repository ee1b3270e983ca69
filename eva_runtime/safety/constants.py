"""What the safety filter derives from its limits, computed once per :class:`SafetyLimits` instead of every tick.

The compiled kernel (:mod:`eva_runtime.safety.kernel`) takes the per-joint limits as one table and the joint to
arm and joint to group maps as index arrays; the report needs the names. Nothing here is mutated after
construction (the arrays are read-only), so one instance is safely shared by every filter and thread using the
same limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from eva_runtime.safety.kernel import limits_table

if TYPE_CHECKING:
    from eva_runtime.safety.limits import SafetyLimits

__all__ = ["FilterConstants"]


def _frozen_index(values: np.ndarray) -> np.ndarray:
    array = np.array(values, dtype=np.intp, copy=True)
    array.setflags(write=False)
    return array


class FilterConstants:
    """Read-only operands of :func:`~eva_runtime.safety.filter.filter_step` for one set of limits."""

    __slots__ = ("arm_names", "arm_of_joint", "dof", "group_of_joint", "joint_names", "table")

    def __init__(self, limits: SafetyLimits) -> None:
        self.dof = limits.dof
        self.joint_names = limits.joint_names
        self.arm_names = limits.arm_names
        self.table = limits_table(
            limits.soft_low,
            limits.soft_high,
            limits.hard_low,
            limits.hard_high,
            limits.velocity_max,
            limits.acceleration_max,
            limits.tracking_error_max,
        )
        self.arm_of_joint = _frozen_index(limits.arm_of_joint)
        # The kernel scales contiguous runs of one group; SafetyLimits builds groups that way (from group starts).
        self.group_of_joint = _frozen_index(limits.group_of_joint)
        if np.any(np.diff(self.group_of_joint) < 0) or len(np.unique(self.group_of_joint)) != len(limits.group_starts):
            raise ValueError(f"joint groups must be contiguous runs, got {limits.group_of_joint.tolist()}")
