"""Property tests of the safety filter over generated command sequences (hypothesis).

At every tick of random and adversarial sequences (NaN, inf, huge values, teleporting targets, sign flips,
jitter, stale inputs, clock glitches, bad measurements, resets) the output is finite, inside the position range,
its step is within the velocity cap and its velocity change within the acceleration cap. Together the two
sequence tests run more than 10,000 generated sequences per CI run.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety import FilterRequest, FilterState, SafetyFilter, SafetyLimits, filter_step, reset_state
from eva_runtime.safety.adversarial import EVENT_KINDS, TickEvent, run_sequence
from eva_runtime.safety.invariants import transition_violations

from .conftest import CALIBRATION

LIMITS = {
    name: SafetyLimits.from_embodiment(load_embodiment(CALIBRATION / f"{name}.yaml"))
    for name in ("aloha_sim", "cobot_magic")
}

ADVERSARIAL = tuple(kind for kind in EVENT_KINDS if kind not in ("track", "reset"))


def events(kinds: tuple[str, ...]) -> st.SearchStrategy[list[TickEvent]]:
    event = st.builds(
        TickEvent,
        kind=st.sampled_from(kinds),
        joint=st.integers(0, 13),
        value=st.floats(-1.0, 1.0, allow_nan=False),
        interval=st.floats(0.2, 1.8, allow_nan=False),
    )
    return st.lists(event, min_size=1, max_size=40)


start_fraction = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=14, max_size=14).map(np.array)
robot = st.sampled_from(sorted(LIMITS))


def start_pose(limits: SafetyLimits, fraction: np.ndarray) -> np.ndarray:
    return limits.soft_low + fraction * (limits.soft_high - limits.soft_low)


@settings(max_examples=6000)
@given(name=robot, fraction=start_fraction, sequence=events(EVENT_KINDS))
def test_random_sequences_never_break_a_bound(name: str, fraction: np.ndarray, sequence: list[TickEvent]) -> None:
    limits = LIMITS[name]
    assert run_sequence(limits, start_pose(limits, fraction), sequence) == []


@settings(max_examples=4500)
@given(name=robot, fraction=start_fraction, sequence=events(ADVERSARIAL))
def test_adversarial_sequences_never_break_a_bound(name: str, fraction: np.ndarray, sequence: list[TickEvent]) -> None:
    limits = LIMITS[name]
    assert run_sequence(limits, start_pose(limits, fraction), sequence) == []


@settings(max_examples=300)
@given(
    name=robot,
    fraction=st.lists(st.floats(0.05, 0.45), min_size=14, max_size=14).map(np.array),
    amplitude=st.floats(0.0, 0.25),
    speed=st.floats(0.05, 0.9),
    ticks=st.integers(1, 200),
)
def test_inside_the_limits_output_equals_input(
    name: str, fraction: np.ndarray, amplitude: float, speed: float, ticks: int
) -> None:
    limits = LIMITS[name]
    span = (limits.soft_high - limits.soft_low) * amplitude + 1e-12
    start = start_pose(limits, fraction)
    # 1 - cos(w t) starts at rest and peaks at 2 * span (below 95 % of the range); w keeps the peak speed
    # and acceleration at `speed` of the caps.
    omega = speed * np.min(np.minimum(limits.velocity_max / span, np.sqrt(limits.acceleration_max / span)))
    state = reset_state(limits, 0.0, start)
    for k in range(1, ticks + 1):
        target = start + span * (1.0 - np.cos(omega * k * limits.control_period_s))
        result = filter_step(limits, state, FilterRequest(time=k * limits.control_period_s, target=target))
        assert result.interventions == ()
        assert np.array_equal(result.command, target)
        state = result.state


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s, lim: s.command + 2 * lim.velocity_max * lim.control_period_s, "velocity cap"),
        (lambda s, lim: np.where(np.arange(lim.dof) == 0, lim.hard_high + 0.1, s.command), "hard range"),
        (lambda s, lim: np.full(lim.dof, np.nan), "non-finite"),
    ],
    ids=["too_fast", "outside", "nan"],
)
def test_the_invariant_checker_itself_catches_violations(change, expected: str) -> None:
    limits = LIMITS["aloha_sim"]
    before = reset_state(limits, 0.0, (limits.soft_low + limits.soft_high) / 2)
    command = change(before, limits)
    dt = limits.control_period_s
    after = FilterState(dt, command, (command - before.command) / dt, command)
    problems = transition_violations(limits, before, after, dt)
    assert any(expected in problem for problem in problems), problems


@settings(max_examples=300)
@given(
    name=robot,
    fraction=start_fraction,
    offsets=st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=14, max_size=14).map(np.array),
)
def test_a_reseed_never_jumps_and_puts_every_gripper_in_range(
    name: str, fraction: np.ndarray, offsets: np.ndarray
) -> None:
    """Leaving ESTOP or FAULT from any measured pose (far outside the range included): arm joints within one tick
    of the velocity cap of the measurement, grippers at their last command, clipped into range; then a hold
    stays inside the range wherever the seed is."""
    limits = LIMITS[name]
    flt, dt = SafetyFilter(limits), limits.control_period_s
    flt.reset(0.0, start_pose(limits, fraction))
    before = flt.state.command
    measured = before + offsets
    flt.reseed(dt, measured, dt)
    seeded, grip = flt.state.command, limits.is_gripper
    assert np.all(np.abs(seeded - measured)[~grip] <= limits.velocity_max[~grip] * dt + 1e-12)
    np.testing.assert_array_equal(seeded[grip], np.clip(before, limits.hard_low, limits.hard_high)[grip])
    inside = (seeded >= limits.hard_low) & (seeded <= limits.hard_high)
    for tick in range(2, 8):
        command = flt.step(tick * dt, None).command
        now_inside = (command >= limits.hard_low) & (command <= limits.hard_high)
        assert np.all(now_inside[inside])  # a hold never leaves the range
        assert np.all(now_inside[grip])


@settings(max_examples=300)
@given(name=robot, fraction=start_fraction, sequence=events(ADVERSARIAL))
def test_the_reports_counts_are_its_records_and_it_keeps_what_was_asked(
    name: str, fraction: np.ndarray, sequence: list[TickEvent]
) -> None:
    """`Interventions.counts()` (what the loop logs, no record built) equals the records counted one by one; a
    caller that reuses its target array after the tick does not change what the report says was asked."""
    from collections import Counter

    limits = LIMITS[name]
    state = reset_state(limits, 0.0, start_pose(limits, fraction))
    rng = np.random.default_rng(len(sequence))
    for tick in range(1, len(sequence) + 1):
        target = rng.uniform(limits.hard_low - 0.5, limits.hard_high + 0.5)
        target[rng.integers(0, limits.dof)] = np.nan if tick % 3 == 0 else target[0]
        asked = target.copy()
        result = filter_step(limits, state, FilterRequest(time=tick * limits.control_period_s, target=target))
        target[:] = 123.0  # the caller reuses its buffer before anyone reads the report
        counts = result.interventions.counts()
        records = list(result.interventions)
        assert counts == dict(Counter(item.check.value for item in records))
        assert bool(result.interventions) == bool(records) and len(result.interventions) == len(records)
        for item in records:
            if item.check.value in ("position_limit", "non_finite_target"):
                index = limits.joint_names.index(item.joint)
                assert item.requested == asked[index] or (np.isnan(item.requested) and np.isnan(asked[index]))
        state = result.state


@given(robot, st.floats(-2.0, 2.0), st.floats(-2.0, 2.0), st.floats(0.0, 1.0))
def test_a_seed_holds_no_gripper_outside_its_range(name: str, left: float, right: float, fraction: float) -> None:
    from eva_runtime.safety import reset_state

    limits = LIMITS[name]
    pose = start_pose(limits, np.full(limits.dof, fraction))
    grippers = np.flatnonzero(limits.is_gripper)
    pose[grippers] = [left, right]  # a squeezing or touching gripper reads outside its range
    seeded = reset_state(limits, 0.0, pose).command
    low, high = limits.hard_low[grippers], limits.hard_high[grippers]
    assert np.all(seeded[grippers] >= low) and np.all(seeded[grippers] <= high)
    inside = (pose >= limits.hard_low) & (pose <= limits.hard_high)
    assert np.array_equal(seeded[inside], pose[inside])  # a reading inside the range is the seed itself
    arms = ~limits.is_gripper
    assert np.array_equal(seeded[arms], pose[arms])  # arm joints seed at their reading (reseed moves them in)
