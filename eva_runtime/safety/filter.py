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

The per-joint arithmetic of steps 1, 3-6 and 8 is one compiled loop (:mod:`eva_runtime.safety.kernel`): here
are the types, shapes, time, staleness and the report. tests/filter_reference.py keeps the straightforward numpy
version it must match bit for bit.
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
from eva_runtime.safety.kernel import ACTED, ASKED_APPLIED, PREVIOUS, Mask, Row, filter_kernel
from eva_runtime.safety.limits import SafetyLimits

__all__ = [
    "MIN_TICK_INTERVAL_S",
    "Check",
    "FilterRequest",
    "FilterResult",
    "FilterState",
    "Intervention",
    "filter_step",
    "reset_state",
]

# A shorter interval is a clock fault, not a tick: rates over it would overflow to inf and then NaN (a subnormal
# interval did, and the command went NaN). The tick is refused like one where time did not advance.
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
    # Shapes are checked before the kernel, which indexes without bounds checks.
    target = previous if hold_all else _vector(previous, request.target, "target")
    measured = None if "joint_state" in stale or request.measured is None else request.measured
    if measured is not None:
        measured = _vector(previous, measured, "measured position")
    work, masks = np.empty((_ROWS, k.dof)), np.empty((_MASKS, k.dof), dtype=bool)
    acted = filter_kernel(
        previous,
        state.velocity,
        state.target,
        target,
        previous if measured is None else measured,
        measured is not None,
        hold_all,
        dt,
        k.table,
        k.arm_of_joint,
        k.group_of_joint,
        work,
        masks,
    )
    fault = state.fault
    if acted & _REPORTED:
        fault = _report_rows(k, previous, work, masks, acted, report, fault)
    held = () if not acted & _HOLD else _held_arms(k, masks[Mask.HOLD], hold_all or bool(acted & _MEASURED_BAD))
    return _result(float(request.time), work[0], work[1], work[2], fault, report, held)


_ROWS, _MASKS = len(Row), len(Mask)
_HOLD = ACTED[Mask.HOLD]
_MEASURED_BAD = ACTED[Mask.NON_FINITE_MEASURED] | ACTED[Mask.TRACKING_ERROR]
_REPORTED = sum(ACTED[: len(ASKED_APPLIED)])
# The kernel's report rows are named after the checks they report, in the same order.
_CHECKS = tuple(Check[mask.name] for mask in Mask if mask is not Mask.HOLD)
assert len(_CHECKS) == len(ASKED_APPLIED) and Row.COMMAND == 0 and Row.VELOCITY == 1 and Row.TARGET == 2


def _report_rows(
    k: FilterConstants,
    previous: np.ndarray,
    work: np.ndarray,
    masks: np.ndarray,
    acted: int,
    report: Report,
    fault: str | None,
) -> str | None:
    """Report each check the kernel found acting, in the checks' order; the (possibly newly latched) fault."""
    for row, check in enumerate(_CHECKS):
        if acted & ACTED[row]:
            asked, applied = ASKED_APPLIED[row]
            applied_values = previous if applied == PREVIOUS else work[applied]
            report_joints(report, k.joint_names, check, masks[row], work[asked], applied_values)
    if acted & ACTED[Mask.TRACKING_ERROR] and fault is None:
        off = masks[Mask.TRACKING_ERROR].nonzero()[0].tolist()
        fault = "tracking_error: " + ", ".join(k.joint_names[i] for i in off)
    return fault


def _tick_interval(limits: SafetyLimits, state: FilterState, request: FilterRequest, report: Report) -> float | None:
    """The interval the rates use (capped at the longest tick); ``None`` when time did not advance."""
    interval = request.time - state.time
    if not interval >= MIN_TICK_INTERVAL_S:  # also catches NaN: time must advance for a rate to mean anything
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


def _held_arms(k: FilterConstants, hold: np.ndarray, every_arm: bool) -> tuple[str, ...]:
    """Names of the arms with at least one held joint (``hold`` has at least one)."""
    if every_arm:
        return k.arm_names
    return tuple(name for i, name in enumerate(k.arm_names) if hold[k.arm_of_joint == i].any())
