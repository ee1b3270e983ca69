"""The safety filter: one pure function from (limits, previous state, request) to (applied command, report).

Every command to the arms, in every mode, passes through :func:`filter_step`. It reads no clock and does no I/O:
time arrives as data in the request, so tests replay any timing exactly. Per control tick, on the whole
bimanual vector (contract in docs/references.md §4):

1. non-finite target values -> that arm holds; non-finite measurement -> every arm holds;
2. input older than its timeout (plan, joint state, frame, teleop) -> every arm holds;
3. the target is clamped to the position limits minus a margin; a joint already inside the margin (e.g. a
   start pose on a limit) may move inward but not further out;
4.-5. the step from the previous command is bounded by the velocity cap, then its change by the acceleration
   cap, each scaled by one factor per group (an arm's joints; each gripper alone) so motion keeps its
   direction;
6. the speed toward each limit is bounded so the joint can still stop inside it under the acceleration cap;
7. grippers get the same checks with their own range and caps;
8. measured position further than a bound from the previous command latches a tracking FAULT (hold until
   :func:`reset_state`);
9. every change is reported as an :class:`Intervention` (check, joint, requested, applied).

"Hold" never means zero and never a jump: the commanded velocity comes to rest under the acceleration cap
(scaled per group, so a moving arm stops along its path) and the command then stays where it stopped.

Jerk is not clamped here: a jerk-limited position filter overshoots a target that jumps, and an overshoot is
worse than jerk in a safety component. Smoothness is the executor's and the reward's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from eva_runtime.safety.braking import braking_speed
from eva_runtime.safety.limits import SafetyLimits

__all__ = [
    "Check",
    "FilterRequest",
    "FilterResult",
    "FilterState",
    "Intervention",
    "filter_step",
    "reset_state",
]


class Check(StrEnum):
    """Which check intervened. Units of requested/applied follow the check."""

    NON_FINITE_TARGET = "non_finite_target"  # position
    NON_FINITE_MEASURED = "non_finite_measured"  # position
    STALE_INPUT = "stale_input"  # joint = input name; requested = age s, applied = timeout s
    CLOCK = "clock"  # joint = "*"; requested = tick interval s, applied = interval used s
    TRACKING_ERROR = "tracking_error"  # requested = measured position, applied = previous command
    POSITION_LIMIT = "position_limit"  # target position before/after the clamp
    VELOCITY = "velocity"  # velocity before/after group scaling
    ACCELERATION = "acceleration"  # acceleration before/after group scaling
    BRAKING = "braking"  # velocity before/after the stopping-distance bound
    HARD_LIMIT = "hard_limit"  # position: last-resort clamp (only reachable from an infeasible reset)


@dataclass(frozen=True, slots=True)
class Intervention:
    check: Check
    joint: str
    requested: float
    applied: float


@dataclass(frozen=True, slots=True)
class FilterState:
    """What the filter remembers between ticks. Arrays are never mutated after construction."""

    time: float
    command: np.ndarray
    velocity: np.ndarray
    target: np.ndarray  # previous (clamped) target, for the target's own velocity
    fault: str | None = None


@dataclass(frozen=True, slots=True)
class FilterRequest:
    """One control tick's input. ``target=None`` asks for a hold (e.g. mode HOLD, planner gap)."""

    time: float
    target: np.ndarray | None
    measured: np.ndarray | None = None
    # Time stamp of each input the target depends on, by name (keys of the embodiment's safety.timeouts_s).
    input_stamps: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FilterResult:
    state: FilterState
    interventions: tuple[Intervention, ...]
    holding: tuple[str, ...]  # names of the arms that were held this tick

    @property
    def command(self) -> np.ndarray:
        return self.state.command

    @property
    def modified(self) -> bool:
        return bool(self.interventions)


def reset_state(
    limits: SafetyLimits, time: float, measured: np.ndarray, measured_velocity: np.ndarray | None = None
) -> FilterState:
    """Seed the filter from the measured state (start-up, and whenever control changes hands)."""
    position = np.array(measured, dtype=np.float64, copy=True)
    if position.shape != (limits.dof,) or not np.all(np.isfinite(position)):
        raise ValueError(f"cannot seed the safety filter from measured position {position!r}")
    velocity = np.zeros(limits.dof)
    if measured_velocity is not None:
        velocity = np.asarray(measured_velocity, dtype=np.float64)
        if velocity.shape != (limits.dof,) or not np.all(np.isfinite(velocity)):
            raise ValueError(f"cannot seed the safety filter from measured velocity {velocity!r}")
        velocity = np.clip(velocity, -limits.velocity_max, limits.velocity_max)
    if not np.isfinite(time):
        raise ValueError(f"cannot seed the safety filter at time {time!r}")
    return FilterState(time=float(time), command=position, velocity=velocity, target=position.copy())


def _report(
    out: list[Intervention], limits: SafetyLimits, check: Check, mask: np.ndarray, asked: np.ndarray, got: np.ndarray
) -> None:
    for index in np.flatnonzero(mask):
        out.append(Intervention(check, limits.joint_names[index], float(asked[index]), float(got[index])))


def _group_scale(limits: SafetyLimits, ratio: np.ndarray) -> np.ndarray:
    """Per-joint factor <= 1 that brings every group's largest ratio to at most 1."""
    worst = np.maximum.reduceat(ratio, limits.group_starts)
    return (1.0 / np.maximum(worst, 1.0))[limits.group_of_joint]


def filter_step(limits: SafetyLimits, state: FilterState, request: FilterRequest) -> FilterResult:
    """Apply every check to one tick's request; return the new state (its ``command`` is what may be sent)."""
    report: list[Intervention] = []
    interval = request.time - state.time
    if not interval > 0.0:  # also catches NaN: time must advance for a rate to mean anything
        report.append(Intervention(Check.CLOCK, "*", float(interval), 0.0))
        return FilterResult(state, tuple(report), limits.arm_names)
    dt = min(interval, limits.max_tick_interval_s)
    if dt < interval:
        report.append(Intervention(Check.CLOCK, "*", float(interval), dt))

    previous = state.command
    hold = np.zeros(limits.dof, dtype=bool)
    fault = state.fault
    hold_all = fault is not None or request.target is None

    for name, stamp in request.input_stamps.items():
        timeout = limits.timeouts_s.get(name, 0.0)  # an input without a timeout is never fresh enough
        age = request.time - stamp
        if not age <= timeout:
            report.append(Intervention(Check.STALE_INPUT, name, float(age), timeout))
            hold_all = True

    if request.measured is not None:
        measured = np.asarray(request.measured, dtype=np.float64)
        if measured.shape != previous.shape:
            raise ValueError(f"measured position has shape {measured.shape}, expected {previous.shape}")
        bad = ~np.isfinite(measured)
        if bad.any():
            _report(report, limits, Check.NON_FINITE_MEASURED, bad, measured, previous)
            hold_all = True
        else:
            off = np.abs(measured - previous) > limits.tracking_error_max
            if off.any():
                _report(report, limits, Check.TRACKING_ERROR, off, measured, previous)
                fault = fault or "tracking_error: " + ", ".join(limits.joint_names[i] for i in np.flatnonzero(off))
                hold_all = True

    if hold_all:
        hold[:] = True
        target = previous
    else:
        target = np.asarray(request.target, dtype=np.float64)
        if target.shape != previous.shape:
            raise ValueError(f"target has shape {target.shape}, expected {previous.shape}")
        bad = ~np.isfinite(target)
        if bad.any():
            _report(report, limits, Check.NON_FINITE_TARGET, bad, target, previous)
            bad_arms = np.unique(limits.arm_of_joint[bad])
            hold = np.isin(limits.arm_of_joint, bad_arms)
            target = np.where(hold, previous, target)

    # 3. Position range; the range widens to include the previous command so a joint inside the margin band
    #    is never pulled inward by the filter itself and cannot move further out.
    low = np.minimum(limits.soft_low, previous)
    high = np.maximum(limits.soft_high, previous)
    clamped = np.minimum(np.maximum(target, low), high)
    moved = clamped != target
    if moved.any():
        _report(report, limits, Check.POSITION_LIMIT, moved, target, clamped)

    # Desired velocity: the target's own velocity plus a correction that closes the gap left by earlier
    # interventions while still being able to stop at the target (so a jump is approached without overshoot).
    gap = state.target - previous
    desired = (clamped - state.target) / dt
    if gap.any():  # zero while tracking undisturbed; skip the square roots then
        distance = np.abs(gap)
        desired += np.sign(gap) * np.minimum(distance / dt, braking_speed(distance, limits.acceleration_max, dt))
    if hold.any():
        desired[hold] = 0.0

    # 5. Velocity cap, one factor per group.
    velocity = desired * _group_scale(limits, np.abs(desired) / limits.velocity_max)
    changed = velocity != desired
    if changed.any():
        _report(report, limits, Check.VELOCITY, changed, desired, velocity)

    # 5. Acceleration cap, one factor per group (this is also how a hold comes to rest along its path).
    step_cap = limits.acceleration_max * dt
    change = velocity - state.velocity
    scale = _group_scale(limits, np.abs(change) / step_cap)
    # Only scaled joints are recomputed: (v - v_prev) + v_prev is not always v in floating point.
    limited = np.where(scale < 1.0, state.velocity + change * scale, velocity)
    changed = limited != velocity
    if changed.any():
        _report(report, limits, Check.ACCELERATION, changed, change / dt, (limited - state.velocity) / dt)

    # 6. Braking: never faster toward a limit than what can still stop inside it.
    toward_high = braking_speed(high - previous, limits.acceleration_max, dt)
    toward_low = braking_speed(previous - low, limits.acceleration_max, dt)
    braked = np.minimum(np.maximum(limited, -toward_low), toward_high)
    # The braking invariant makes this a no-op; it matters only after a reset seeded with a velocity that
    # cannot stop in time, where the acceleration cap wins and the hard limit below is the backstop.
    braked = np.minimum(np.maximum(braked, state.velocity - step_cap), state.velocity + step_cap)
    changed = braked != limited
    if changed.any():
        _report(report, limits, Check.BRAKING, changed, limited, braked)

    command = previous + braked * dt
    inside = np.minimum(
        np.maximum(command, np.minimum(limits.hard_low, previous)), np.maximum(limits.hard_high, previous)
    )
    changed = inside != command
    if changed.any():
        _report(report, limits, Check.HARD_LIMIT, changed, command, inside)
    # Where nothing intervened, send the target itself, bit for bit, rather than previous + v*dt.
    untouched = (braked == desired) & (gap == 0.0) & ~hold & ~changed
    command = np.where(untouched, clamped, inside)

    new_state = FilterState(
        time=float(request.time),
        command=command,
        velocity=(command - previous) / dt,
        target=np.where(hold, command, clamped),
        fault=fault,
    )
    held = ()
    if hold.any():
        held = tuple(name for i, name in enumerate(limits.arm_names) if hold[limits.arm_of_joint == i].any())
    return FilterResult(new_state, tuple(report), held)
