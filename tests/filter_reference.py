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
   :func:`reset_state`); a stale joint state is not compared (an old reading of a moving arm is not a tracking
   error: step 2 already holds, and a robot that stays silent is the loop's FAULT, named as such);
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


# Contract change of 2026-12-07: a shorter interval is refused as a clock fault (subnormal ones made NaN commands).
MIN_TICK_INTERVAL_S = 1e-6


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
    """Seed the filter from the measured state (start-up, and whenever control changes hands). The contract changed
    on 2026-12-06: a gripper's seed is clipped into its hard range (a squeezing gripper reads outside it)."""
    position = np.array(measured, dtype=np.float64, copy=True)
    if position.shape != (limits.dof,) or not np.all(np.isfinite(position)):
        raise ValueError(f"cannot seed the safety filter from measured position {position!r}")
    position = np.where(limits.is_gripper, np.clip(position, limits.hard_low, limits.hard_high), position)
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
    dt = _tick_interval(limits, state, request, report)
    if dt is None:
        return FilterResult(state, tuple(report), limits.arm_names)
    previous = state.command
    stale = _stale_inputs(limits, request, report)
    hold_all = state.fault is not None or request.target is None or bool(stale)
    measured = None if "joint_state" in stale else request.measured
    measured_bad, fault = _check_measured(limits, previous, measured, state.fault, report)
    target, hold = _checked_target(limits, previous, request.target, hold_all or measured_bad, report)
    clamped, low, high = _clamp_position(limits, previous, target, report)
    desired, gap = _desired_velocity(limits, state, clamped, hold, dt)
    velocity = _cap_velocity(limits, desired, report)
    limited = _cap_acceleration(limits, state.velocity, velocity, dt, report)
    braked = _brake(limits, state, low, high, limited, dt, report)
    inside, hard_clamped = _move_inside_hard_limits(limits, previous, braked, dt, report)
    # Where nothing intervened, send the target itself, bit for bit, rather than previous + v*dt.
    untouched = (braked == desired) & (gap == 0.0) & ~hold & ~hard_clamped
    command = np.where(untouched, clamped, inside)

    new_state = FilterState(
        time=float(request.time),
        command=command,
        velocity=(command - previous) / dt,
        target=np.where(hold, command, clamped),
        fault=fault,
    )
    return FilterResult(new_state, tuple(report), _held_arms(limits, hold))


def _tick_interval(
    limits: SafetyLimits, state: FilterState, request: FilterRequest, report: list[Intervention]
) -> float | None:
    """The interval the rates use (capped at the longest tick); ``None`` when time did not advance."""
    interval = request.time - state.time
    if not interval >= MIN_TICK_INTERVAL_S:  # also catches NaN: time must advance for a rate to mean anything
        report.append(Intervention(Check.CLOCK, "*", float(interval), 0.0))
        return None
    dt = min(interval, limits.max_tick_interval_s)
    if dt < interval:
        report.append(Intervention(Check.CLOCK, "*", float(interval), dt))
    return dt


def _stale_inputs(limits: SafetyLimits, request: FilterRequest, report: list[Intervention]) -> set[str]:
    """Step 2: report every input older than its timeout; their names (any one makes every arm hold)."""
    stale = set()
    for name, stamp in request.input_stamps.items():
        timeout = limits.timeouts_s.get(name, 0.0)  # an input without a timeout is never fresh enough
        age = request.time - stamp
        if not age <= timeout:
            report.append(Intervention(Check.STALE_INPUT, name, float(age), timeout))
            stale.add(name)
    return stale


def _checked_vector(
    limits: SafetyLimits,
    previous: np.ndarray,
    values: np.ndarray,
    what: str,
    check: Check,
    report: list[Intervention],
) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as float64 and its non-finite mask, reported under ``check``; a wrong shape is a caller's bug."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != previous.shape:
        raise ValueError(f"{what} has shape {values.shape}, expected {previous.shape}")
    bad = ~np.isfinite(values)
    if bad.any():
        _report(report, limits, check, bad, values, previous)
    return values, bad


def _check_measured(
    limits: SafetyLimits,
    previous: np.ndarray,
    measured: np.ndarray | None,
    fault: str | None,
    report: list[Intervention],
) -> tuple[bool, str | None]:
    """Steps 1 and 8 on the measurement: whether every arm must hold, and the (possibly newly latched) fault."""
    if measured is None:
        return False, fault
    measured, bad = _checked_vector(limits, previous, measured, "measured position", Check.NON_FINITE_MEASURED, report)
    if bad.any():
        return True, fault
    off = np.abs(measured - previous) > limits.tracking_error_max
    if off.any():
        _report(report, limits, Check.TRACKING_ERROR, off, measured, previous)
        fault = fault or "tracking_error: " + ", ".join(limits.joint_names[i] for i in np.flatnonzero(off))
        return True, fault
    return False, fault


def _checked_target(
    limits: SafetyLimits,
    previous: np.ndarray,
    requested: np.ndarray | None,
    hold_all: bool,
    report: list[Intervention],
) -> tuple[np.ndarray, np.ndarray]:
    """Step 1 on the target: the target to filter and the per-joint hold mask (every arm, or those with a bad value)."""
    hold = np.zeros(limits.dof, dtype=bool)
    if hold_all:
        hold[:] = True
        return previous, hold
    target, bad = _checked_vector(limits, previous, requested, "target", Check.NON_FINITE_TARGET, report)
    if bad.any():
        bad_arms = np.unique(limits.arm_of_joint[bad])
        hold = np.isin(limits.arm_of_joint, bad_arms)
        target = np.where(hold, previous, target)
    return target, hold


def _clamp_position(
    limits: SafetyLimits, previous: np.ndarray, target: np.ndarray, report: list[Intervention]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 3: the target clamped to the position range, and that range (low, high)."""
    # The range widens to include the previous command so a joint inside the margin band is never pulled inward
    # by the filter itself and cannot move further out.
    low = np.minimum(limits.soft_low, previous)
    high = np.maximum(limits.soft_high, previous)
    clamped = np.minimum(np.maximum(target, low), high)
    moved = clamped != target
    if moved.any():
        _report(report, limits, Check.POSITION_LIMIT, moved, target, clamped)
    return clamped, low, high


def _desired_velocity(
    limits: SafetyLimits, state: FilterState, clamped: np.ndarray, hold: np.ndarray, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """The velocity asked for (zero where held), and the gap earlier interventions left between target and command."""
    # The target's own velocity plus a correction that closes the gap while still being able to stop at the
    # target, so a jump is approached without overshoot.
    gap = state.target - state.command
    desired = (clamped - state.target) / dt
    if gap.any():  # zero while tracking undisturbed; skip the square roots then
        distance = np.abs(gap)
        desired += np.sign(gap) * np.minimum(distance / dt, braking_speed(distance, limits.acceleration_max, dt))
    if hold.any():
        desired[hold] = 0.0
    return desired, gap


def _cap_velocity(limits: SafetyLimits, desired: np.ndarray, report: list[Intervention]) -> np.ndarray:
    """Step 4: the velocity cap, one factor per group so motion keeps its direction."""
    velocity = desired * _group_scale(limits, np.abs(desired) / limits.velocity_max)
    changed = velocity != desired
    if changed.any():
        _report(report, limits, Check.VELOCITY, changed, desired, velocity)
    return velocity


def _cap_acceleration(
    limits: SafetyLimits, last_velocity: np.ndarray, velocity: np.ndarray, dt: float, report: list[Intervention]
) -> np.ndarray:
    """Step 5: the acceleration cap, one factor per group (also how a hold comes to rest along its path)."""
    step_cap = limits.acceleration_max * dt
    change = velocity - last_velocity
    scale = _group_scale(limits, np.abs(change) / step_cap)
    # Only scaled joints are recomputed: (v - v_prev) + v_prev is not always v in floating point.
    limited = np.where(scale < 1.0, last_velocity + change * scale, velocity)
    changed = limited != velocity
    if changed.any():
        _report(report, limits, Check.ACCELERATION, changed, change / dt, (limited - last_velocity) / dt)
    return limited


def _brake(
    limits: SafetyLimits,
    state: FilterState,
    low: np.ndarray,
    high: np.ndarray,
    limited: np.ndarray,
    dt: float,
    report: list[Intervention],
) -> np.ndarray:
    """Step 6: never faster toward a limit than what can still stop inside it."""
    step_cap = limits.acceleration_max * dt
    toward_high = braking_speed(high - state.command, limits.acceleration_max, dt)
    toward_low = braking_speed(state.command - low, limits.acceleration_max, dt)
    braked = np.minimum(np.maximum(limited, -toward_low), toward_high)
    # The braking invariant makes this a no-op; it matters only after a reset seeded with a velocity that
    # cannot stop in time, where the acceleration cap wins and the hard limit is the backstop.
    braked = np.minimum(np.maximum(braked, state.velocity - step_cap), state.velocity + step_cap)
    changed = braked != limited
    if changed.any():
        _report(report, limits, Check.BRAKING, changed, limited, braked)
    return braked


def _move_inside_hard_limits(
    limits: SafetyLimits, previous: np.ndarray, braked: np.ndarray, dt: float, report: list[Intervention]
) -> tuple[np.ndarray, np.ndarray]:
    """The command the braked velocity reaches, clamped to the hard range (last resort), and where it was clamped."""
    command = previous + braked * dt
    inside = np.minimum(
        np.maximum(command, np.minimum(limits.hard_low, previous)), np.maximum(limits.hard_high, previous)
    )
    changed = inside != command
    if changed.any():
        _report(report, limits, Check.HARD_LIMIT, changed, command, inside)
    return inside, changed


def _held_arms(limits: SafetyLimits, hold: np.ndarray) -> tuple[str, ...]:
    """Names of the arms with at least one held joint."""
    if not hold.any():
        return ()
    return tuple(name for i, name in enumerate(limits.arm_names) if hold[limits.arm_of_joint == i].any())
