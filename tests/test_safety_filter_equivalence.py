"""The optimised safety filter against the reference (tests/filter_reference.py, the filter before optimisation).

Both run the same request sequences, each from its own state, and every tick must agree bit for bit: command,
velocity, target, time, fault, holding arms and the interventions (check, joint, requested, applied, in order).
The sequences mix clean tracking with everything the contract handles: targets on, near and beyond the limits,
NaN/inf/huge values, signed zeros, stale and unknown input stamps, measurements with tracking errors or NaNs,
non-advancing, backward, tiny and too-long ticks, and resets (some with a velocity that cannot stop in time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety import SafetyLimits
from eva_runtime.safety import filter as current
from eva_runtime.safety.filter import FilterRequest
from eva_runtime.safety.interventions import intervention

from . import filter_reference as reference
from .conftest import CALIBRATION

LIMITS = {
    name: SafetyLimits.from_embodiment(load_embodiment(CALIBRATION / f"{name}.yaml"))
    for name in ("aloha_sim", "cobot_magic")
}
INTERVALS = ("period", "period", "period", "jitter", "jitter", "repeat", "back", "gap", "tiny", "subnormal", "nan_time")
TARGETS = (
    *("track",) * 3,
    *("smooth",) * 3,
    "hold",
    "previous",
    "nan",
    "arm_nan",
    "inf",
    "huge",
    "teleport",
    "soft_edge",
    "hard_edge",
    "signed_zero",
    "as_list",
    *("reset",) * 3,
)
# A tracking error latches a fault that only a reset clears: rare enough that most ticks do not hold.
MEASUREMENTS = (*("none",) * 8, *("close",) * 4, "far", "nan", "edge")
STAMPS = (*("none",) * 5, *("fresh",) * 5, "stale", "joint_state_stale", "unknown", "nan_stamp")


@dataclass(frozen=True)
class Tick:
    interval: str
    target: str
    measured: str
    stamps: str
    joint: int
    value: float  # in [-1, 1]
    seed: int  # for per-joint random values
    repeat: int  # how many more times the tick recurs (runs of smooth motion are where nothing intervenes)


def random_ticks(rng: np.random.Generator, count: int) -> list[Tick]:
    """``count`` ticks drawn from a seeded generator (the hypothesis test draws the same fields)."""
    ticks = []
    for _ in range(count):
        joint, value, seed = int(rng.integers(14)), float(rng.uniform(-1.0, 1.0)), int(rng.integers(2**31))
        if rng.random() < 0.1:  # a run of clean motion, where the filter must send the target itself
            interval, measured = ("period", "jitter")[rng.integers(2)], ("none", "close")[rng.integers(2)]
            ticks.append(Tick(interval, "smooth", measured, "fresh", joint, value, seed, int(rng.integers(10, 60))))
            continue
        kinds = (INTERVALS, TARGETS, MEASUREMENTS, STAMPS)
        interval, target, measured, stamps = (kind[rng.integers(len(kind))] for kind in kinds)
        repeat = int(rng.integers(40)) if rng.random() < 0.2 else 0
        ticks.append(Tick(interval, target, measured, stamps, joint, value, seed, repeat))
    return ticks


def _time(limits: SafetyLimits, now: float, tick: Tick) -> float:
    period, value = limits.control_period_s, abs(tick.value)
    time = {
        "period": now + period,
        "jitter": now + period * (0.2 + 1.6 * value),
        "repeat": now,
        "back": now - value * period,
        "gap": now + (1.0 + 99.0 * value) * period,
        "tiny": now + 10.0 ** (-4.0 - 8.0 * value),
        "subnormal": now + 5e-324 * (1.0 + 1e6 * value),  # a subnormal interval only right after time 0
        "nan_time": float("nan"),
    }[tick.interval]
    # Times also arrive as numpy scalars (float32 rounds them, so ticks repeat or jump).
    return np.float64(time) if tick.seed % 10 == 1 else np.float32(time) if tick.seed % 10 == 2 else time


def _target(limits: SafetyLimits, memory: np.ndarray, command: np.ndarray, tick: Tick, dt: float) -> np.ndarray:
    """The next target; ``memory`` is the running target that tracking moves on from."""
    rng = np.random.default_rng(tick.seed)
    joint, value = tick.joint, tick.value
    kind = tick.target
    if kind == "smooth":  # within both caps even from rest: what a good plan asks for
        speed = 0.5 * value * np.minimum(limits.velocity_max, limits.acceleration_max * limits.control_period_s)
        return memory + speed * rng.uniform(-1.0, 1.0, limits.dof) * dt
    if kind == "track":
        pattern = np.sign(np.sin(np.arange(limits.dof) + joint))
        return memory + 3.0 * value * limits.velocity_max * limits.control_period_s * pattern
    if kind == "previous":
        return command.copy()
    if kind == "teleport":
        return rng.uniform(limits.hard_low - 0.5, limits.hard_high + 0.5)
    if kind in ("soft_edge", "hard_edge"):
        low, high = (limits.soft_low, limits.soft_high) if kind == "soft_edge" else (limits.hard_low, limits.hard_high)
        edge = np.where(rng.random(limits.dof) < 0.5, low, high)
        nudge = rng.choice([-1e-12, 0.0, 0.0, 1e-12], size=limits.dof)
        return np.where(rng.random(limits.dof) < 0.5, edge + nudge, memory)
    target = memory.copy()
    if kind == "nan":
        target[joint] = np.nan
    elif kind == "arm_nan":
        target[limits.arm_of_joint == limits.arm_of_joint[joint]] = np.nan
    elif kind == "inf":
        target[joint] = np.copysign(np.inf, value)
    elif kind == "huge":
        target[joint] = np.copysign(10.0 ** (abs(value) * 300.0), value)
    elif kind == "signed_zero":
        target[rng.random(limits.dof) < 0.5] = np.copysign(0.0, value)
    return target


def _measured(limits: SafetyLimits, command: np.ndarray, tick: Tick) -> np.ndarray | None:
    if tick.measured == "none":
        return None
    rng = np.random.default_rng(tick.seed + 1)
    measured = command + rng.uniform(-0.5, 0.5, limits.dof) * limits.tracking_error_max
    if tick.measured == "far":
        measured[tick.joint] = (
            command[tick.joint] + np.copysign(1.5, tick.value) * limits.tracking_error_max[tick.joint]
        )
    elif tick.measured == "nan":
        measured[tick.joint] = np.nan
    elif tick.measured == "edge":
        measured = command + np.where(rng.random(limits.dof) < 0.5, 1.0, -1.0) * limits.tracking_error_max
    return measured


def _stamps(limits: SafetyLimits, time: float, tick: Tick) -> dict[str, float]:
    timeouts, value = limits.timeouts_s, abs(tick.value)
    return {
        "none": {},
        "fresh": {"plan": time - value * timeouts["plan"], "frame": time},
        "stale": {"plan": time - timeouts["plan"] * (1.0 + value)},
        "joint_state_stale": {"joint_state": time - 2.0 * timeouts["joint_state"]},
        "unknown": {"teleop_2": time},  # no timeout: fresh only at age 0
        "nan_stamp": {"frame": float("nan")},
    }[tick.stamps]


def _reset(limits: SafetyLimits, tick: Tick, time: float) -> tuple[np.ndarray, np.ndarray | None]:
    """A seeded pose (sometimes in the margin band or beyond the hard range) and velocity (sometimes infeasible)."""
    rng = np.random.default_rng(tick.seed)
    band = rng.uniform(-0.3, 1.3, limits.dof)
    pose = limits.hard_low + np.clip(band, -0.01, 1.01) * (limits.hard_high - limits.hard_low)
    if tick.value < -0.3:
        return pose, None
    return pose, rng.uniform(-1.0, 1.0, limits.dof) * limits.velocity_max * (1.0 + tick.value)


def _bits(values: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    return values.dtype.str, values.shape, values.tobytes()


def _records(result: object) -> list[tuple[str, str, str, str]]:
    return [
        (str(item.check), item.joint, float(item.requested).hex(), float(item.applied).hex())
        for item in result.interventions  # type: ignore[attr-defined]
    ]


def assert_same(new: current.FilterResult, old: reference.FilterResult, where: str) -> None:
    assert type(new) is current.FilterResult and type(new.state) is current.FilterState, where
    for name in ("command", "velocity", "target"):
        assert _bits(getattr(new.state, name)) == _bits(getattr(old.state, name)), f"{where}: {name}"
    assert float(new.state.time).hex() == float(old.state.time).hex(), where
    assert new.state.fault == old.state.fault, where
    assert new.holding == old.holding, where
    assert _records(new) == _records(old), where
    assert all(type(item) is current.Intervention and type(item.check) is current.Check for item in new.interventions)


def _assert_fresh(new: current.FilterResult, before: current.FilterState, request: FilterRequest) -> None:
    """A new state owns its arrays: none is shared with the previous state, the request or another field."""
    if new.state is before:
        return
    arrays = [new.state.command, new.state.velocity, new.state.target]
    others = [before.command, before.velocity, before.target, request.target, request.measured]
    for index, array in enumerate(arrays):
        for other in arrays[index + 1 :] + [o for o in others if isinstance(o, np.ndarray)]:
            assert not np.shares_memory(array, other)


def drive(limits: SafetyLimits, fraction: np.ndarray, start: float, ticks: Sequence[Tick]) -> list[str]:
    """Run both filters over ``ticks``, asserting agreement each tick; return the checks the reference reported."""
    pose = limits.soft_low + fraction * (limits.soft_high - limits.soft_low)
    new_state, old_state = current.reset_state(limits, start, pose), reference.reset_state(limits, start, pose)
    memory = pose.copy()
    seen = []
    for number, tick in enumerate(item for item in ticks for _ in range(1 + item.repeat)):
        time = _time(limits, old_state.time, tick)
        if tick.target == "reset" and np.isfinite(time):
            pose, velocity = _reset(limits, tick, time)
            new_state = current.reset_state(limits, time, pose, velocity)
            old_state = reference.reset_state(limits, time, pose, velocity)
            memory = pose.copy()
            continue
        dt = time - old_state.time
        target = None if tick.target == "hold" else _target(limits, memory, old_state.command, tick, dt)
        if target is not None and np.all(np.isfinite(target)):
            memory = target
        measured = _measured(limits, old_state.command, tick)
        stamps = _stamps(limits, time, tick)
        request_target = target.tolist() if tick.target == "as_list" and target is not None else target
        new_request = FilterRequest(time, request_target, measured, stamps)
        copies = (None if target is None else np.copy(target), None if measured is None else measured.copy())
        old = reference.filter_step(limits, old_state, reference.FilterRequest(time, *copies, dict(stamps)))
        new = current.filter_step(limits, new_state, new_request)
        assert_same(new, old, f"tick {number} {tick}")
        _assert_fresh(new, new_state, new_request)
        assert target is None or tick.target == "as_list" or np.array_equal(target, copies[0], equal_nan=True)
        new_state, old_state = new.state, old.state
        seen.extend(item.check.value for item in old.interventions)
    return seen


single_tick = st.builds(
    Tick,
    interval=st.sampled_from(INTERVALS),
    target=st.sampled_from(TARGETS),
    measured=st.sampled_from(MEASUREMENTS),
    stamps=st.sampled_from(STAMPS),
    joint=st.integers(0, 13),
    value=st.floats(-1.0, 1.0, allow_nan=False),
    seed=st.integers(0, 2**31 - 1),
    repeat=st.sampled_from([0, 0, 0, 0, 3, 30]),
)
clean_run = st.builds(
    Tick,
    interval=st.sampled_from(["period", "jitter"]),
    target=st.just("smooth"),
    measured=st.sampled_from(["none", "close"]),
    stamps=st.just("fresh"),
    joint=st.integers(0, 13),
    value=st.floats(-1.0, 1.0, allow_nan=False),
    seed=st.integers(0, 2**31 - 1),
    repeat=st.integers(10, 60),
)
tick_strategy = st.one_of(single_tick, single_tick, single_tick, clean_run)


@settings(max_examples=400)
@given(
    name=st.sampled_from(sorted(LIMITS)),
    fraction=st.lists(st.floats(0.0, 1.0), min_size=14, max_size=14).map(np.array),
    start=st.sampled_from([0.0, 1.0, 1.7e9]),
    ticks=st.lists(tick_strategy, min_size=1, max_size=20),
)
def test_generated_sequences_match_the_reference(name: str, fraction: np.ndarray, start: float, ticks) -> None:
    drive(LIMITS[name], fraction, start, ticks)


def test_seeded_sequences_match_the_reference_and_cover_every_check() -> None:
    rng = np.random.default_rng(20260501)
    seen: set[str] = set()
    for sequence in range(120):
        name = sorted(LIMITS)[sequence % 2]
        ticks = random_ticks(rng, int(rng.integers(1, 60)))
        seen.update(drive(LIMITS[name], rng.random(14), float(rng.choice([0.0, 1.7e9])), ticks))
    assert seen == {check.value for check in current.Check}


def test_fast_records_equal_dataclass_construction() -> None:
    built = intervention(current.Check.VELOCITY, "left_j1", 1.5, 1.0)
    assert built == current.Intervention(current.Check.VELOCITY, "left_j1", 1.5, 1.0)
    assert hash(built) == hash(current.Intervention(current.Check.VELOCITY, "left_j1", 1.5, 1.0))
    assert repr(built) == repr(current.Intervention(current.Check.VELOCITY, "left_j1", 1.5, 1.0))
