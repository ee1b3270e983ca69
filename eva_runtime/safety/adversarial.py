"""Adversarial command sequences for the safety filter, and a runner that checks every tick's bounds.

A sequence is a start pose plus a list of :class:`TickEvent`: what goes wrong on that tick (NaN, inf, huge
values, teleporting targets, sign flips, jitter, stale inputs, explicit holds, clock glitches, bad or diverging
measurements, resets). Hypothesis tests draw events with strategies; the soak command draws them from a seeded
numpy generator. Both run them through :func:`run_sequence`, which counts invariant violations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eva_runtime.safety.filter import FilterRequest, filter_step, reset_state
from eva_runtime.safety.invariants import transition_violations
from eva_runtime.safety.limits import SafetyLimits

__all__ = ["EVENT_KINDS", "TickEvent", "random_sequence", "run_sequence"]

EVENT_KINDS = (
    "track",  # the target moves by 3 * `value` velocity caps' worth of step (too fast, on purpose, at times)
    "nan",
    "inf",
    "huge",  # +-10**(value * 300)
    "teleport",  # target anywhere in [hard_low - 1, hard_high + 1]
    "flip",  # sign flip of the target (about zero, so far outside some ranges)
    "jitter",  # large noise on every joint
    "stale",  # a plan stamp older than its timeout
    "hold",  # target None
    "clock_repeat",
    "clock_back",
    "clock_gap",  # a tick 1-100 x late
    "measured_nan",
    "measured_far",  # a measured position beyond the tracking bound -> latched fault
    "reset",  # re-seed from a measured pose inside the range (what a handover does)
)


@dataclass(frozen=True, slots=True)
class TickEvent:
    kind: str
    joint: int
    value: float  # in [-1, 1]
    interval: float  # tick interval as a multiple of the control period, > 0


def random_sequence(limits: SafetyLimits, rng: np.random.Generator, length: int) -> tuple[np.ndarray, list[TickEvent]]:
    """A random start pose inside the soft range and `length` events, a third of them clean tracking."""
    start = rng.uniform(limits.soft_low, limits.soft_high)
    kinds = rng.choice(len(EVENT_KINDS), size=length, p=_KIND_WEIGHTS)
    events = [
        TickEvent(
            kind=EVENT_KINDS[k],
            joint=int(rng.integers(limits.dof)),
            value=float(rng.uniform(-1.0, 1.0)),
            interval=float(rng.uniform(0.2, 1.8)),
        )
        for k in kinds
    ]
    return start, events


_KIND_WEIGHTS = np.array([14.0] + [2.0] * (len(EVENT_KINDS) - 1))
_KIND_WEIGHTS /= _KIND_WEIGHTS.sum()


def run_sequence(limits: SafetyLimits, start: np.ndarray, events: Sequence[TickEvent]) -> list[str]:
    """Run the events through the filter from `start`; return every invariant violation, tick by tick."""
    period = limits.control_period_s
    state = reset_state(limits, 0.0, start)
    target = start.copy()
    problems: list[str] = []
    for tick, event in enumerate(events):
        time = state.time + event.interval * period
        request_target: np.ndarray | None
        measured = None
        stamps: dict[str, float] = {}
        joint, value = event.joint, event.value
        if event.kind == "track":
            target = target + 3.0 * value * limits.velocity_max * period * np.sign(
                np.sin(np.arange(limits.dof) + joint)
            )
        elif event.kind == "teleport":
            target = limits.hard_low - 1.0 + (value + 1.0) / 2.0 * (limits.hard_high - limits.hard_low + 2.0)
        elif event.kind == "flip":
            target = -target
        elif event.kind == "jitter":
            target = target + value * np.cos(np.arange(limits.dof) * 7.0 + joint)
        elif event.kind == "clock_repeat":
            time = state.time
        elif event.kind == "clock_back":
            time = state.time - abs(value) * period
        elif event.kind == "clock_gap":
            time = state.time + (1.0 + 99.0 * abs(value)) * period
        elif event.kind == "stale":
            stamps = {"plan": time - limits.timeouts_s["plan"] * (1.0 + abs(value))}
        elif event.kind == "measured_nan":
            measured = state.command.copy()
            measured[joint] = np.nan
        elif event.kind == "measured_far":
            measured = state.command.copy()
            measured[joint] += np.copysign(1.5 * limits.tracking_error_max[joint], value)
        elif event.kind == "reset":
            pose = limits.soft_low + (abs(value) % 1.0) * (limits.soft_high - limits.soft_low)
            state = reset_state(limits, time, pose)
            target = pose.copy()
            continue
        request_target = target.copy()
        if event.kind == "nan":
            request_target[joint] = np.nan
        elif event.kind == "inf":
            request_target[joint] = np.copysign(np.inf, value)
        elif event.kind == "huge":
            request_target[joint] = np.copysign(10.0 ** (abs(value) * 300.0), value)
        elif event.kind == "hold":
            request_target = None
        request = FilterRequest(time=time, target=request_target, measured=measured, input_stamps=stamps)
        result = filter_step(limits, state, request)
        for problem in transition_violations(limits, state, result.state, time):
            problems.append(f"tick {tick} ({event.kind}): {problem}")
        state = result.state
    return problems
