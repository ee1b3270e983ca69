"""Steps 3-6 of the safety filter and the last-resort hard clamp: from a checked target to the command to send.

The contract is :mod:`eva_runtime.safety.filter`'s; this module is its arithmetic, arranged for speed on a
14-value vector, where each numpy call costs far more than its work. So: the braking speeds, which do not depend
on each other, share one call on stacked rows (both limits and the gap); a check that finds nothing to change
skips its scaling, since its factors would all be exactly 1.0; operands are arrays of the operation's own shape
(a Python scalar or a broadcast operand costs extra per call); and any()/all() on a mask read its bytes. Every
value is still computed by the same floating-point operations, in the same order, as the straightforward version
(tests/filter_reference.py), so results are identical bit for bit (tests/test_safety_filter_equivalence.py).
"""

from __future__ import annotations

import numpy as np

from eva_runtime.safety.constants import FilterConstants
from eva_runtime.safety.interventions import Check, Report, report_joints

__all__ = ["move"]


def move(
    k: FilterConstants,
    previous: np.ndarray,
    last_velocity: np.ndarray,
    last_target: np.ndarray,
    target: np.ndarray,
    hold: np.ndarray | None,
    dt: float,
    report: Report,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The command, its velocity, the target to remember and the hold mask (None: no joint held).

    ``hold`` is k.all_joints when every arm holds (``target`` is then ``previous``), else None and ``target`` is
    as requested, not yet checked for non-finite values: that is step 1, done here with the clamp.
    """
    span = np.array(dt)  # ufuncs take a 0-d array faster than a Python float
    # The range widens to include the previous command so a joint inside the margin band is never pulled inward
    # by the filter itself and cannot move further out.
    low, high = np.minimum(k.soft_low, previous), np.maximum(k.soft_high, previous)
    clamped, hold = _clamp(k, previous, target, hold, low, high, report)
    gap = None if hold is k.all_joints else last_target - previous
    if gap is not None and not np.count_nonzero(gap):
        gap = None  # tracking undisturbed: no correction to brake, and every joint may pass untouched
    distance = _distances(k, previous, low, high, gap)
    step_caps = k.acceleration_rows[len(distance)] * span  # a*dt on every row: the velocity change a tick allows
    step_cap = step_caps[0]
    toward = k.braking_speed(distance, step_caps, step_caps * step_caps)
    desired = _desired_velocity(k, last_target, clamped, hold, span, gap, distance, toward)
    velocity = _cap_velocity(k, desired, report)
    limited = _cap_acceleration(k, last_velocity, velocity, span, step_cap, report)
    braked = np.minimum(np.maximum(limited, -toward[1]), toward[0])
    # The braking invariant makes this a no-op; it matters only after a reset seeded with a velocity that
    # cannot stop in time, where the acceleration cap wins and the hard limit is the backstop.
    braked = np.minimum(np.maximum(braked, last_velocity - step_cap), last_velocity + step_cap)
    braking = braked != limited
    braking = braking if braking.tobytes() != k.no_bytes else None
    if braking is not None:
        report_joints(report, k.joint_names, Check.BRAKING, braking, limited, braked)
    moving = previous + braked * span
    inside = np.minimum(np.maximum(moving, np.minimum(k.hard_low, previous)), np.maximum(k.hard_high, previous))
    hard = inside != moving
    hard = hard if hard.tobytes() != k.no_bytes else None
    if hard is not None:
        report_joints(report, k.joint_names, Check.HARD_LIMIT, hard, moving, inside)
    if hold is None and gap is None and hard is None and braking is None and limited is desired:
        # Nothing intervened: send the target itself, bit for bit; if the last command was the last target bit
        # for bit too, the command's velocity is the target's velocity, already computed.
        if last_target.tobytes() == previous.tobytes():
            return clamped.copy(), desired, clamped, hold
        command, remembered = clamped.copy(), clamped
    else:
        command, remembered = _command(k, clamped, inside, braked == desired, gap, hold, hard)
    return command, (command - previous) / span, remembered, hold


def _clamp(
    k: FilterConstants,
    previous: np.ndarray,
    target: np.ndarray,
    hold: np.ndarray | None,
    low: np.ndarray,
    high: np.ndarray,
    report: Report,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Steps 1 and 3 on the target: the clamped target and the hold mask, with the arms of non-finite values."""
    clamped = np.minimum(np.maximum(target, low), high)
    moved = clamped != target
    if moved.tobytes() == k.no_bytes:
        return clamped, hold  # so every value is finite: a NaN never equals itself, an inf clamps to a bound
    if hold is None:
        finite = np.isfinite(target)
        if finite.tobytes() != k.all_bytes:
            bad = ~finite
            report_joints(report, k.joint_names, Check.NON_FINITE_TARGET, bad, target.copy(), previous)
            arms = np.zeros(len(k.arm_names), dtype=bool)
            arms[k.arm_of_joint[bad]] = True
            hold = arms[k.arm_of_joint]  # a bad value holds its whole arm
            target = np.where(hold, previous, target)
            clamped = np.minimum(np.maximum(target, low), high)
            moved = clamped != target
    if moved.tobytes() != k.no_bytes:
        # The caller's target array may change after the tick; the report keeps what was asked.
        report_joints(report, k.joint_names, Check.POSITION_LIMIT, moved, target.copy(), clamped)
    return clamped, hold


def _distances(
    k: FilterConstants, previous: np.ndarray, low: np.ndarray, high: np.ndarray, gap: np.ndarray | None
) -> np.ndarray:
    """What step 6 brakes over, stacked for one braking-speed call: to the high limit, to the low one, the gap."""
    distance = np.empty((2 if gap is None else 3, k.dof))
    np.subtract(high, previous, out=distance[0])
    np.subtract(previous, low, out=distance[1])
    if gap is not None:
        np.abs(gap, out=distance[2])
    return distance


def _desired_velocity(
    k: FilterConstants,
    last_target: np.ndarray,
    clamped: np.ndarray,
    hold: np.ndarray | None,
    span: np.ndarray,
    gap: np.ndarray | None,
    distance: np.ndarray,
    toward: np.ndarray,
) -> np.ndarray:
    """The velocity asked for: zero where held, else the target's own velocity and a correction of the gap."""
    if hold is k.all_joints:
        return np.zeros(k.dof)
    desired = (clamped - last_target) / span
    if gap is not None:
        # The correction closes the gap while still being able to stop at the target, so a jump is approached
        # without overshoot.
        desired += np.sign(gap) * np.minimum(distance[2] / span, toward[2])
    if hold is not None:
        desired[hold] = 0.0
    return desired


def _cap_velocity(k: FilterConstants, desired: np.ndarray, report: Report) -> np.ndarray:
    """Step 4: the velocity cap, one factor per group so motion keeps its direction."""
    speed = np.abs(desired)
    if (speed <= k.velocity_max).tobytes() == k.all_bytes:
        # Then every |v|/v_max <= 1 and every factor would be exactly 1.0 (NaN fails the test: the long way).
        return desired
    velocity = desired * k.group_scale(speed / k.velocity_max)
    changed = velocity != desired
    if changed.tobytes() != k.no_bytes:
        report_joints(report, k.joint_names, Check.VELOCITY, changed, desired, velocity)
    return velocity


def _cap_acceleration(
    k: FilterConstants,
    last_velocity: np.ndarray,
    velocity: np.ndarray,
    span: np.ndarray,
    step_cap: np.ndarray,
    report: Report,
) -> np.ndarray:
    """Step 5: the acceleration cap, one factor per group (also how a hold comes to rest along its path)."""
    change = velocity - last_velocity
    size = np.abs(change)
    if (size <= step_cap).tobytes() == k.all_bytes:
        return velocity
    scale = k.group_scale(size / step_cap)
    # Only scaled joints are recomputed: (v - v_prev) + v_prev is not always v in floating point.
    limited = np.where(scale < 1.0, last_velocity + change * scale, velocity)
    changed = limited != velocity
    if changed.tobytes() != k.no_bytes:
        applied = (limited - last_velocity) / span
        report_joints(report, k.joint_names, Check.ACCELERATION, changed, change / span, applied)
    return limited


def _command(
    k: FilterConstants,
    clamped: np.ndarray,
    inside: np.ndarray,
    untouched: np.ndarray,
    gap: np.ndarray | None,
    hold: np.ndarray | None,
    hard: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The command (the target itself where nothing intervened) and the target to remember, never one array."""
    if hold is k.all_joints:
        return inside, inside.copy()
    if gap is not None:
        untouched &= gap == 0.0
    if hold is not None:
        untouched &= ~hold
    if hard is not None:
        untouched &= ~hard
    flags = untouched.tobytes()
    if flags == k.all_bytes:
        command = clamped.copy()
    elif flags == k.no_bytes:
        command = inside
    else:
        command = np.where(untouched, clamped, inside)
    return command, (clamped if hold is None else np.where(hold, command, clamped))
