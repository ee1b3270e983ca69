"""The safety filter's per-joint arithmetic (steps 1, 3-6 and 8, and the hard clamp), compiled with numba.

Why compiled: on a 14-joint vector numpy spends its time in call overhead, not arithmetic (about 40 calls a
tick, half a microsecond or more each), so the numpy version cost 20-60 us a tick however it was arranged. One
compiled loop over the joints does the same work in about a microsecond. The contract stays in
:mod:`eva_runtime.safety.filter`, which checks types and shapes, keeps time and staleness and builds the report.

Every value is computed by the same IEEE operations, in the same order, as the straightforward numpy version
(tests/filter_reference.py), and results are identical bit for bit (tests/test_safety_filter_equivalence.py).
That takes numpy's conventions where IEEE leaves a choice: ``np.maximum``/``np.minimum`` propagate NaN and return
their second operand on a tie (so +0.0 against -0.0 keeps the sign numpy keeps); ``np.sign`` of a zero is +0.0.
No fast-math (no reassociation, no fused multiply-add) and numpy's error model (a division by zero is inf or NaN,
never an exception), as numpy does.

The kernel writes into arrays the caller allocates and returns a bit set of what happened; the rows below name
what each row of those arrays holds.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np
from numba import njit, types

__all__ = ["ACTED", "ASKED_APPLIED", "PREVIOUS", "Mask", "Row", "filter_kernel", "limits_table"]

# Rows of the limits table (limits_table).
SOFT_LOW, SOFT_HIGH, HARD_LOW, HARD_HIGH, VELOCITY_MAX, ACCELERATION_MAX, TWO_ACCELERATION, TRACKING_MAX = range(8)
LIMIT_ROWS = 8


class Row(IntEnum):
    """Rows of the work array: the new state, then the values each report quotes."""

    COMMAND = 0
    VELOCITY = 1
    TARGET = 2
    MEASURED = 3
    TARGET_ASKED = 4
    TARGET_KEPT = 5
    CLAMPED = 6
    DESIRED = 7
    CAPPED = 8
    CHANGE_RATE = 9
    APPLIED_RATE = 10
    LIMITED = 11
    BRAKED = 12
    MOVING = 13
    INSIDE = 14


class Mask(IntEnum):
    """Rows of the mask array, in the order the reports are made (the order of the checks)."""

    NON_FINITE_MEASURED = 0
    TRACKING_ERROR = 1
    NON_FINITE_TARGET = 2
    POSITION_LIMIT = 3
    VELOCITY = 4
    ACCELERATION = 5
    BRAKING = 6
    HARD_LIMIT = 7
    HOLD = 8


# Bit i of the kernel's result: mask row i has at least one joint set (HOLD: some joint is held).
ACTED = tuple(1 << row for row in Mask)
PREVIOUS = -1  # an ASKED_APPLIED entry: the previous command (the caller's array), not a work row
# For each report row: the work rows of (requested, applied).
ASKED_APPLIED = (
    (Row.MEASURED, PREVIOUS),
    (Row.MEASURED, PREVIOUS),
    (Row.TARGET_ASKED, PREVIOUS),
    (Row.TARGET_KEPT, Row.CLAMPED),
    (Row.DESIRED, Row.CAPPED),
    (Row.CHANGE_RATE, Row.APPLIED_RATE),
    (Row.LIMITED, Row.BRAKED),
    (Row.MOVING, Row.INSIDE),
)


def limits_table(
    soft_low: np.ndarray,
    soft_high: np.ndarray,
    hard_low: np.ndarray,
    hard_high: np.ndarray,
    velocity_max: np.ndarray,
    acceleration_max: np.ndarray,
    tracking_error_max: np.ndarray,
) -> np.ndarray:
    """The per-joint limits as one read-only (LIMIT_ROWS, dof) array, the kernel's single limits operand."""
    rows = [soft_low, soft_high, hard_low, hard_high, velocity_max, acceleration_max]
    table = np.array([*rows, 2.0 * acceleration_max, tracking_error_max], dtype=np.float64)
    table.setflags(write=False)
    return table


# The GIL is kept: releasing it around a microsecond of work would invite another thread (a camera thread) to take
# it, and the control loop would then wait up to Python's switch interval to get it back.
_FAST = {"cache": True, "error_model": "numpy"}


@njit(**_FAST)
def _max(a: float, b: float) -> float:
    """np.maximum(a, b): NaN propagates (the first NaN), a tie returns b."""
    if a != a:
        return a
    if b != b:
        return b
    return a if a > b else b


@njit(**_FAST)
def _min(a: float, b: float) -> float:
    """np.minimum(a, b): NaN propagates (the first NaN), a tie returns b."""
    if a != a:
        return a
    if b != b:
        return b
    return a if a < b else b


@njit(**_FAST)
def _sign(x: float) -> float:
    """np.sign(x): +0.0 for either zero, NaN for NaN."""
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    if x == 0.0:
        return 0.0
    return x


@njit(**_FAST)
def _braking_speed(distance: float, two_acceleration: float, acceleration: float, dt: float) -> float:
    """braking.braking_speed for one joint, operation for operation."""
    a_dt = acceleration * dt
    reach = two_acceleration * _max(distance, 0.0)
    return reach / (math.sqrt(a_dt * a_dt + reach) + a_dt)


@njit(**_FAST)
def _group_scale(ratio: np.ndarray, group_of_joint: np.ndarray, scale: np.ndarray) -> None:
    """Per-joint factor <= 1 that brings every group's largest ratio to at most 1 (groups are contiguous)."""
    n = ratio.shape[0]
    start = 0
    while start < n:
        end = start + 1
        while end < n and group_of_joint[end] == group_of_joint[start]:
            end += 1
        worst = ratio[start]
        for i in range(start + 1, end):
            worst = _max(worst, ratio[i])
        factor = 1.0 / _max(worst, 1.0)
        for i in range(start, end):
            scale[i] = factor
        start = end


@njit(**_FAST)
def _any(masks: np.ndarray, row: int) -> bool:
    return masks[row].any()


@njit(**_FAST)
def _check_measured(previous, measured, table, work, masks) -> int:  # type: ignore[no-untyped-def]
    """Steps 1 and 8 on the measurement: its report bits (any one makes every arm hold)."""
    n = previous.shape[0]
    bad = False
    for i in range(n):
        work[Row.MEASURED, i] = measured[i]
        masks[Mask.NON_FINITE_MEASURED, i] = not math.isfinite(measured[i])
        bad |= masks[Mask.NON_FINITE_MEASURED, i]
    if bad:
        return 1 << Mask.NON_FINITE_MEASURED
    off = False
    for i in range(n):
        masks[Mask.TRACKING_ERROR, i] = abs(measured[i] - previous[i]) > table[TRACKING_MAX, i]
        off |= masks[Mask.TRACKING_ERROR, i]
    return (1 << Mask.TRACKING_ERROR) if off else 0


@njit(**_FAST)
def _check_target(previous, target, arm_of_joint, hold_all, work, masks) -> int:  # type: ignore[no-untyped-def]
    """Step 1 on the target: TARGET_KEPT and the hold mask (every arm, or the arms with a non-finite value)."""
    n = previous.shape[0]
    kept, hold = work[Row.TARGET_KEPT], masks[Mask.HOLD]
    if hold_all:
        kept[:] = previous
        hold[:] = True
        return 1 << Mask.HOLD
    bad = False
    for i in range(n):
        work[Row.TARGET_ASKED, i] = target[i]
        kept[i] = target[i]
        masks[Mask.NON_FINITE_TARGET, i] = not math.isfinite(target[i])
        bad |= masks[Mask.NON_FINITE_TARGET, i]
    hold[:] = False
    if not bad:
        return 0
    for i in range(n):  # a bad value holds its whole arm
        if masks[Mask.NON_FINITE_TARGET, i]:
            for j in range(n):
                if arm_of_joint[j] == arm_of_joint[i]:
                    hold[j] = True
    for i in range(n):
        if hold[i]:
            kept[i] = previous[i]
    return (1 << Mask.NON_FINITE_TARGET) | (1 << Mask.HOLD)


@njit(**_FAST)
def _clamp_and_desire(previous, last_target, table, dt, work, masks) -> int:  # type: ignore[no-untyped-def]
    """Step 3 (clamp into the position range) and the velocity asked for: the target's own velocity plus a
    correction that closes any gap to the last target while still able to stop there (no overshoot)."""
    n = previous.shape[0]
    moved = gap_any = False
    for i in range(n):
        low, high = _min(table[SOFT_LOW, i], previous[i]), _max(table[SOFT_HIGH, i], previous[i])
        clamped = _min(_max(work[Row.TARGET_KEPT, i], low), high)
        work[Row.CLAMPED, i] = clamped
        masks[Mask.POSITION_LIMIT, i] = clamped != work[Row.TARGET_KEPT, i]
        moved |= masks[Mask.POSITION_LIMIT, i]
        work[Row.DESIRED, i] = (clamped - last_target[i]) / dt
        gap_any |= (last_target[i] - previous[i]) != 0.0
    if gap_any:
        for i in range(n):
            gap = last_target[i] - previous[i]
            distance = abs(gap)
            toward = _braking_speed(distance, table[TWO_ACCELERATION, i], table[ACCELERATION_MAX, i], dt)
            work[Row.DESIRED, i] += _sign(gap) * _min(distance / dt, toward)
    for i in range(n):
        if masks[Mask.HOLD, i]:
            work[Row.DESIRED, i] = 0.0
    return (1 << Mask.POSITION_LIMIT) if moved else 0


@njit(**_FAST)
def _cap_rates(last_velocity, table, group_of_joint, dt, work, masks, scale) -> int:  # type: ignore[no-untyped-def]
    """Steps 4 and 5: the velocity cap, then the acceleration cap, one factor per group (motion keeps its
    direction; a hold comes to rest along its path)."""
    n = last_velocity.shape[0]
    for i in range(n):
        work[Row.CAPPED, i] = abs(work[Row.DESIRED, i]) / table[VELOCITY_MAX, i]  # the ratio, for now
    _group_scale(work[Row.CAPPED], group_of_joint, scale)
    for i in range(n):
        work[Row.CAPPED, i] = work[Row.DESIRED, i] * scale[i]
        masks[Mask.VELOCITY, i] = work[Row.CAPPED, i] != work[Row.DESIRED, i]
        change = work[Row.CAPPED, i] - last_velocity[i]
        work[Row.CHANGE_RATE, i] = change  # the change, for now
        work[Row.LIMITED, i] = abs(change) / (table[ACCELERATION_MAX, i] * dt)  # the ratio, for now
    _group_scale(work[Row.LIMITED], group_of_joint, scale)
    for i in range(n):
        change = work[Row.CHANGE_RATE, i]
        velocity = work[Row.CAPPED, i]
        # Only scaled joints are recomputed: (v - v_prev) + v_prev is not always v in floating point.
        limited = last_velocity[i] + change * scale[i] if scale[i] < 1.0 else velocity
        work[Row.LIMITED, i] = limited
        masks[Mask.ACCELERATION, i] = limited != velocity
        work[Row.CHANGE_RATE, i] = change / dt
        work[Row.APPLIED_RATE, i] = (limited - last_velocity[i]) / dt
    return (1 << Mask.VELOCITY) * _any(masks, Mask.VELOCITY) + (1 << Mask.ACCELERATION) * _any(masks, Mask.ACCELERATION)


@njit(**_FAST)
def _brake_and_move(previous, last_velocity, table, dt, work, masks) -> int:  # type: ignore[no-untyped-def]
    """Step 6 (never faster toward a limit than can still stop inside it), the move, and the hard clamp."""
    n = previous.shape[0]
    for i in range(n):
        a, two_a = table[ACCELERATION_MAX, i], table[TWO_ACCELERATION, i]
        low, high = _min(table[SOFT_LOW, i], previous[i]), _max(table[SOFT_HIGH, i], previous[i])
        toward_high = _braking_speed(high - previous[i], two_a, a, dt)
        toward_low = _braking_speed(previous[i] - low, two_a, a, dt)
        limited = work[Row.LIMITED, i]
        braked = _min(_max(limited, -toward_low), toward_high)
        # The braking invariant makes this a no-op; it matters only after a reset seeded with a velocity that
        # cannot stop in time, where the acceleration cap wins and the hard limit is the backstop.
        step_cap = a * dt
        braked = _min(_max(braked, last_velocity[i] - step_cap), last_velocity[i] + step_cap)
        work[Row.BRAKED, i] = braked
        masks[Mask.BRAKING, i] = braked != limited
        moving = previous[i] + braked * dt
        inside = _min(_max(moving, _min(table[HARD_LOW, i], previous[i])), _max(table[HARD_HIGH, i], previous[i]))
        work[Row.MOVING, i], work[Row.INSIDE, i] = moving, inside
        masks[Mask.HARD_LIMIT, i] = inside != moving
    return (1 << Mask.BRAKING) * _any(masks, Mask.BRAKING) + (1 << Mask.HARD_LIMIT) * _any(masks, Mask.HARD_LIMIT)


@njit(**_FAST)
def _new_state(previous, last_target, dt, work, masks) -> None:  # type: ignore[no-untyped-def]
    """Command (the target itself, bit for bit, where nothing intervened), its velocity, the target to keep."""
    for i in range(previous.shape[0]):
        held, clamped = masks[Mask.HOLD, i], work[Row.CLAMPED, i]
        untouched = (
            work[Row.BRAKED, i] == work[Row.DESIRED, i]
            and (last_target[i] - previous[i]) == 0.0
            and not held
            and not masks[Mask.HARD_LIMIT, i]
        )
        command = clamped if untouched else work[Row.INSIDE, i]
        work[Row.COMMAND, i] = command
        work[Row.VELOCITY, i] = (command - previous[i]) / dt
        work[Row.TARGET, i] = command if held else clamped


_VECTOR = types.Array(types.float64, 1, "A", readonly=True)
_INDEX = types.Array(types.intp, 1, "A", readonly=True)
_SIGNATURE = types.int64(
    _VECTOR,  # previous command
    _VECTOR,  # its velocity
    _VECTOR,  # the last (clamped) target
    _VECTOR,  # this tick's target (ignored when hold_all)
    _VECTOR,  # the measured position (ignored unless has_measured)
    types.boolean,  # has_measured
    types.boolean,  # hold_all: a fault, no target or a stale input
    types.float64,  # dt
    types.Array(types.float64, 2, "A", readonly=True),  # limits_table
    _INDEX,  # arm of each joint
    _INDEX,  # group of each joint (contiguous groups)
    types.Array(types.float64, 2, "C"),  # work (len(Row), dof), written
    types.Array(types.boolean, 2, "C"),  # masks (len(Mask), dof), written
)


# Compiled when this module is imported (or loaded from numba's cache), never on a control tick.
@njit(_SIGNATURE, **_FAST)
def filter_kernel(  # type: ignore[no-untyped-def]
    previous, last_velocity, last_target, target, measured, has_measured, hold_all, dt, table, arms, groups, work, masks
) -> int:
    """Steps 1, 3-6 and 8 for one tick: fills ``work`` and ``masks``; returns the bits of the mask rows set."""
    acted = 0
    if has_measured:
        acted |= _check_measured(previous, measured, table, work, masks)
    hold_all = hold_all or acted != 0
    acted |= _check_target(previous, target, arms, hold_all, work, masks)
    acted |= _clamp_and_desire(previous, last_target, table, dt, work, masks)
    acted |= _cap_rates(last_velocity, table, groups, dt, work, masks, np.empty(previous.shape[0]))
    acted |= _brake_and_move(previous, last_velocity, table, dt, work, masks)
    _new_state(previous, last_target, dt, work, masks)
    return acted
