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

The arithmetic of steps 3-6 is in :mod:`eva_runtime.safety.motion`, arranged for speed (a tick costs numpy calls,
not flops); tests/filter_reference.py keeps the straightforward version it must match bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from eva_runtime.safety.constants import FilterConstants
from eva_runtime.safety.interventions import (
    Check,
    Intervention,
    Interventions,
    Report,
    intervention,
    report_joints,
)
from eva_runtime.safety.limits import SafetyLimits
from eva_runtime.safety.motion import move

__all__ = [
    "Check",
    "FilterRequest",
    "FilterResult",
    "FilterState",
    "Intervention",
    "filter_step",
    "reset_state",
]


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
    interventions: Interventions  # a Sequence[Intervention], built on first look; .counts() per check
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
    """Seed the filter from the measured state (start-up, and whenever control changes hands). A gripper's seed is
    clipped into its hard range: its reading leaves the range while it squeezes or touches an object (the
    simulated gripper reads 1.09, or -0.24 with a fingertip on the cube's edge), and the filter never pulls a
    command inward on its own, so a seed outside would be held there (the chaos soak saw 2,670 such commands)."""
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


# As for Intervention (interventions.py): fill the slots directly, skipping the frozen __init__'s setattr calls.
_new = object.__new__
_set_time = FilterState.time.__set__  # type: ignore[attr-defined]
_set_command = FilterState.command.__set__  # type: ignore[attr-defined]
_set_velocity = FilterState.velocity.__set__  # type: ignore[attr-defined]
_set_target = FilterState.target.__set__  # type: ignore[attr-defined]
_set_fault = FilterState.fault.__set__  # type: ignore[attr-defined]
_set_state = FilterResult.state.__set__  # type: ignore[attr-defined]
_set_interventions = FilterResult.interventions.__set__  # type: ignore[attr-defined]
_set_holding = FilterResult.holding.__set__  # type: ignore[attr-defined]


def _result(
    time: float,
    command: np.ndarray,
    velocity: np.ndarray,
    target: np.ndarray,
    fault: str | None,
    report: Report,
    held: tuple[str, ...],
) -> FilterResult:
    """``FilterResult(FilterState(time, command, velocity, target, fault), tuple(report), held)``, built faster."""
    state = _new(FilterState)
    _set_time(state, time)
    _set_command(state, command)
    _set_velocity(state, velocity)
    _set_target(state, target)
    _set_fault(state, fault)
    result = _new(FilterResult)
    _set_state(result, state)
    _set_interventions(result, Interventions(report))
    _set_holding(result, held)
    return result


def filter_step(limits: SafetyLimits, state: FilterState, request: FilterRequest) -> FilterResult:
    """Apply every check to one tick's request; return the new state (its ``command`` is what may be sent)."""
    report: Report = []
    dt = _tick_interval(limits, state, request, report)
    if dt is None:
        return FilterResult(state, Interventions(report), limits.arm_names)
    k = limits.constants
    previous = state.command
    stale = _stale_inputs(limits, request, report) if request.input_stamps else ()
    hold_all = state.fault is not None or request.target is None or bool(stale)
    measured = None if "joint_state" in stale else request.measured
    measured_bad, fault = _check_measured(k, previous, measured, state.fault, report)
    if hold_all or measured_bad:
        target, hold = previous, k.all_joints
    else:  # non-finite values are looked for with the clamp (move), which finds them for free
        target, hold = _vector(previous, request.target, "target"), None
    command, velocity, target, hold = move(k, previous, state.velocity, state.target, target, hold, dt, report)
    return _result(float(request.time), command, velocity, target, fault, report, _held_arms(k, hold))


def _tick_interval(limits: SafetyLimits, state: FilterState, request: FilterRequest, report: Report) -> float | None:
    """The interval the rates use (capped at the longest tick); ``None`` when time did not advance."""
    interval = request.time - state.time
    if not interval > 0.0:  # also catches NaN: time must advance for a rate to mean anything
        report.append(intervention(Check.CLOCK, "*", float(interval), 0.0))
        return None
    dt = min(interval, limits.max_tick_interval_s)
    if dt < interval:
        report.append(intervention(Check.CLOCK, "*", float(interval), dt))
    return dt


def _stale_inputs(limits: SafetyLimits, request: FilterRequest, report: Report) -> set[str]:
    """Step 2: report every input older than its timeout; their names (any one makes every arm hold)."""
    stale = set()
    for name, stamp in request.input_stamps.items():
        timeout = limits.timeouts_s.get(name, 0.0)  # an input without a timeout is never fresh enough
        age = request.time - stamp
        if not age <= timeout:
            report.append(intervention(Check.STALE_INPUT, name, float(age), timeout))
            stale.add(name)
    return stale


def _vector(previous: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != previous.shape:  # a caller's bug, not a condition to filter
        raise ValueError(f"{what} has shape {values.shape}, expected {previous.shape}")
    return values


def _checked_vector(
    k: FilterConstants,
    previous: np.ndarray,
    values: np.ndarray,
    what: str,
    check: Check,
    report: Report,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``values`` as float64 and its non-finite mask (None if all finite), reported under ``check``."""
    values = _vector(previous, values, what)
    finite = np.isfinite(values)
    if finite.tobytes() == k.all_bytes:
        return values, None
    bad = ~finite
    report_joints(report, k.joint_names, check, bad, values.copy(), previous)  # the caller's array may change
    return values, bad


def _check_measured(
    k: FilterConstants,
    previous: np.ndarray,
    measured: np.ndarray | None,
    fault: str | None,
    report: Report,
) -> tuple[bool, str | None]:
    """Steps 1 and 8 on the measurement: whether every arm must hold, and the (possibly newly latched) fault."""
    if measured is None:
        return False, fault
    measured, bad = _checked_vector(k, previous, measured, "measured position", Check.NON_FINITE_MEASURED, report)
    if bad is not None:
        return True, fault
    off = np.abs(measured - previous) > k.tracking_error_max
    if off.tobytes() != k.no_bytes:
        report_joints(report, k.joint_names, Check.TRACKING_ERROR, off, measured.copy(), previous)
        fault = fault or "tracking_error: " + ", ".join(k.joint_names[i] for i in off.nonzero()[0].tolist())
        return True, fault
    return False, fault


def _held_arms(k: FilterConstants, hold: np.ndarray | None) -> tuple[str, ...]:
    """Names of the arms with at least one held joint."""
    if hold is None:
        return ()
    if hold is k.all_joints:
        return k.arm_names
    return tuple(name for i, name in enumerate(k.arm_names) if hold[k.arm_of_joint == i].any())
