"""Safety limits as flat per-joint arrays, derived once from an :class:`~eva_runtime.embodiment.Embodiment`.

The filter works on the whole bimanual vector at once. Joints are grouped for direction-preserving scaling:
each arm's revolute joints form one group and each gripper its own group, so slowing an arm keeps the
direction of its motion while the gripper keeps its own rate cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from eva_runtime.safety.constants import FilterConstants

if TYPE_CHECKING:
    from collections.abc import Mapping

    from eva_runtime.embodiment import Embodiment

__all__ = ["SafetyLimits"]


@dataclass(frozen=True, eq=False)
class SafetyLimits:
    joint_names: tuple[str, ...]
    arm_names: tuple[str, ...]
    hard_low: np.ndarray
    hard_high: np.ndarray
    soft_low: np.ndarray
    soft_high: np.ndarray
    velocity_max: np.ndarray
    acceleration_max: np.ndarray
    tracking_error_max: np.ndarray
    is_gripper: np.ndarray
    arm_of_joint: np.ndarray
    group_starts: np.ndarray
    group_of_joint: np.ndarray
    control_period_s: float
    max_tick_interval_s: float
    timeouts_s: Mapping[str, float]

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @cached_property
    def constants(self) -> FilterConstants:
        """The filter's operands derived from these limits, built on first use (the limits are never mutated)."""
        return FilterConstants(self)

    @classmethod
    def from_embodiment(cls, embodiment: Embodiment) -> SafetyLimits:
        joints = embodiment.joints
        safety = embodiment.safety
        hard_low, hard_high = embodiment.position_limits()
        is_gripper = embodiment.gripper_mask()
        margin = np.where(is_gripper, safety.position_margin_gripper, safety.position_margin_revolute)
        soft_low, soft_high = hard_low + margin, hard_high - margin
        too_narrow = np.flatnonzero(soft_low >= soft_high)
        if too_narrow.size:
            names = [joints[i].name for i in too_narrow]
            raise ValueError(
                f"embodiment {embodiment.name!r}: safety position margins leave no room for joints {names}"
            )
        arm_of_joint = np.concatenate([np.full(len(arm.joints), i) for i, arm in enumerate(embodiment.arms)])
        # A new group starts at each arm's first joint and at every gripper (the gripper is last in its arm).
        starts = [0]
        for index in range(1, len(joints)):
            if is_gripper[index] or arm_of_joint[index] != arm_of_joint[index - 1]:
                starts.append(index)
        group_starts = np.array(starts)
        group_of_joint = np.searchsorted(group_starts, np.arange(len(joints)), side="right") - 1
        return cls(
            joint_names=embodiment.joint_names,
            arm_names=tuple(arm.name for arm in embodiment.arms),
            hard_low=hard_low,
            hard_high=hard_high,
            soft_low=soft_low,
            soft_high=soft_high,
            velocity_max=np.array([j.velocity_max for j in joints]),
            acceleration_max=np.array([j.acceleration_max for j in joints]),
            tracking_error_max=np.where(is_gripper, safety.tracking_error_max_gripper, safety.tracking_error_max),
            is_gripper=is_gripper,
            arm_of_joint=arm_of_joint,
            group_starts=group_starts,
            group_of_joint=group_of_joint,
            control_period_s=embodiment.control_period_s,
            max_tick_interval_s=safety.max_tick_interval_s,
            timeouts_s=MappingProxyType(dict(safety.timeouts_s)),
        )
