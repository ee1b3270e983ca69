"""`GripperLatch`: two-state grippers from the openings an IDM decodes, with hysteresis.

A gripper in a pick-and-place task is open or closed on the object; what lies between is a transition, not a
place to stay. An IDM reading a blurred, imagined gripper returns in-between openings, and in closed loop that
shows as a hand that arrives at the cube half-closed (0.6-0.75 of the range against the expert's 0.93), so its
fingers land on the cube instead of around it (docs/world_model.md, "Where the grasp is lost"). The latch turns
each decoded opening into open or closed: a gripper closes only when the plan goes below `close_below` of its
range, and opens only above `open_above`; inside the band it keeps its state, so a noisy plan cannot make it
chatter. Its state at the start of a plan is the one being commanded, so a plan cannot open a closed gripper
without asking for it. The levels are the safety filter's soft limits: a closed gripper squeezes as far as
the filter allows, which is what holds an object, and the filter still limits how fast it gets there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eva_runtime.safety.limits import SafetyLimits

__all__ = ["GripperLatch", "checked_band"]


def checked_band(band: object) -> tuple[float, float]:
    """`band` as (close_below, open_above), fractions of a gripper's range; ValueError naming what is wrong."""
    values = tuple(float(v) for v in band)  # type: ignore[attr-defined]
    if len(values) != 2 or not 0.0 < values[0] <= values[1] < 1.0:
        raise ValueError(
            f"gripper latch needs [close_below, open_above] with 0 < close_below <= open_above < 1, got {list(values)}"
        )
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class GripperLatch:
    joints: tuple[int, ...]  # the grippers' indices in a command
    closed_level: np.ndarray  # per gripper, what a closed gripper is commanded
    open_level: np.ndarray
    close_below: np.ndarray  # per gripper, the decoded opening under which an open gripper closes
    open_above: np.ndarray  # ... over which a closed gripper opens

    @classmethod
    def for_limits(cls, limits: SafetyLimits, close_below: float = 0.35, open_above: float = 0.65) -> GripperLatch:
        """Thresholds as fractions of each gripper's soft range (0: closed end, 1: open end)."""
        close_below, open_above = checked_band((close_below, open_above))
        joints = tuple(int(j) for j in np.flatnonzero(limits.is_gripper))
        low, high = limits.soft_low[list(joints)], limits.soft_high[list(joints)]
        span = high - low
        return cls(joints, low, high, low + close_below * span, low + open_above * span)

    def apply(self, actions: np.ndarray, current_command: np.ndarray) -> np.ndarray:
        """`actions` (H, dof) with every gripper column replaced by its latched level; the arms are untouched."""
        latched = np.array(actions, dtype=np.float64, copy=True)
        for k, joint in enumerate(self.joints):
            is_open = current_command[joint] > 0.5 * (self.closed_level[k] + self.open_level[k])
            for row, opening in enumerate(actions[:, joint]):
                if is_open and opening < self.close_below[k]:
                    is_open = False
                elif not is_open and opening > self.open_above[k]:
                    is_open = True
                latched[row, joint] = self.open_level[k] if is_open else self.closed_level[k]
        return latched
