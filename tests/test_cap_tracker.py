"""The executor's cap tracker (control/cap_tracker.py): what it sends stays within its share of the caps, so the
safety filter after it has nothing to change in nominal motion; faults still reach the filter; it continues from
what the robot was given. On the real filter, in the loop on simulated time, and with hypothesis."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.control.cap_tracker import CapTracker, tracker_limits
from eva_runtime.control.episode_stats import episode_counters
from eva_runtime.control.executor import Plan
from eva_runtime.control.modes import Mode
from eva_runtime.control.planner import PlanOutcome, PlanRequest
from eva_runtime.control.planner_port import InProcessPlanner
from eva_runtime.embodiment import load_embodiment
from eva_runtime.records.outcome_fields import TRACKER_PREFIX
from eva_runtime.safety import Check, SafetyFilter, SafetyLimits
from tests.conftest import CALIBRATION
from tests.test_autonomous_loop import make_loop, run

LIMITS = SafetyLimits.from_embodiment(load_embodiment(CALIBRATION / "aloha_sim.yaml"))
PERIOD = LIMITS.control_period_s
HEADROOM = 0.9
SAFETY_CHECKS = {c.value for c in Check}


def _middle() -> np.ndarray:
    return (LIMITS.soft_low + LIMITS.soft_high) / 2


def _track(targets: np.ndarray, start: np.ndarray, headroom: float = HEADROOM):
    """Every target through the tracker and then the real filter, as the loop does: commands and the filter's
    interventions per tick, and the tracker's changes."""
    safety, tracker, changes = SafetyFilter(LIMITS), CapTracker(LIMITS, headroom), Counter()
    safety.reset(0.0, start)
    commands, interventions = [start], []
    for tick, target in enumerate(targets, start=1):
        asked = tracker.follow(tick * PERIOD, target, safety.state, changes)
        result = safety.step(tick * PERIOD, asked)
        commands.append(result.command)
        interventions.append(result.interventions.counts())
    return np.array(commands), interventions, changes


@st.composite
def jumpy_targets(draw) -> tuple[np.ndarray, np.ndarray]:
    """A start inside the range and targets that jump between random poses in its middle, far faster than the caps
    allow (a decoded plan at its worst: teleports, reversals)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    middle, half = _middle(), 0.3 * (LIMITS.soft_high - LIMITS.soft_low)
    poses = middle + half * rng.uniform(-1, 1, size=(draw(st.integers(1, 6)), LIMITS.dof))
    holds = rng.integers(1, 40, size=len(poses))
    targets = np.repeat(poses, holds, axis=0)
    start = middle + half * rng.uniform(-1, 1, size=LIMITS.dof)
    return start, np.concatenate([targets, np.repeat(targets[-1:], 120, axis=0)])


@settings(max_examples=60, deadline=None)
@given(jumpy_targets())
def test_the_filter_after_the_tracker_has_nothing_to_change_and_the_target_is_reached(case) -> None:
    start, targets = case
    commands, interventions, changes = _track(targets, start)
    assert all(not counts for counts in interventions), [c for c in interventions if c][:3]
    velocity = np.diff(commands, axis=0) / PERIOD
    assert np.all(np.abs(velocity) <= HEADROOM * LIMITS.velocity_max * (1 + 1e-9))
    acceleration = np.diff(np.vstack([np.zeros(LIMITS.dof), velocity]), axis=0) / PERIOD
    assert np.all(np.abs(acceleration) <= HEADROOM * LIMITS.acceleration_max * (1 + 1e-9))
    assert sum(changes.values()) > 0  # these targets are far beyond the caps: the tracker did the shaping
    np.testing.assert_allclose(commands[-1], targets[-1], atol=1e-9)  # and still arrives


def test_a_step_is_approached_without_overshoot() -> None:
    start = _middle()
    target = start + 0.5 * (LIMITS.soft_high - start)
    commands, _, _ = _track(np.repeat(target[None], 150, axis=0), start)
    progress = (commands - start) / (target - start)
    assert np.all(np.diff(progress, axis=0) >= -1e-12) and np.all(progress <= 1 + 1e-12)
    np.testing.assert_allclose(commands[-1], target, atol=1e-12)


def test_without_the_tracker_the_same_motion_is_shaped_by_the_filter() -> None:
    start = _middle()
    target = start + 0.5 * (LIMITS.soft_high - start)
    safety = SafetyFilter(LIMITS)
    safety.reset(0.0, start)
    counts = Counter()
    for tick in range(1, 60):
        counts.update(safety.step(tick * PERIOD, target).interventions.counts())
    assert counts[Check.VELOCITY.value] > 0 and counts[Check.ACCELERATION.value] > 0  # what the tracker takes over


def test_a_target_beyond_the_soft_range_still_reaches_the_filter_which_counts_it() -> None:
    start = _middle()
    target = start.copy()
    target[2] = LIMITS.hard_high[2] - 1e-3  # inside the hard range, beyond the soft one
    _, interventions, _ = _track(np.repeat(target[None], 300, axis=0), start)
    assert sum(c.get(Check.POSITION_LIMIT.value, 0) for c in interventions) > 0


def test_a_non_finite_target_passes_untouched_so_the_filter_holds_the_arm() -> None:
    safety, tracker = SafetyFilter(LIMITS), CapTracker(LIMITS, HEADROOM)
    safety.reset(0.0, _middle())
    target = _middle()
    target[3] = np.nan
    asked = tracker.follow(PERIOD, target, safety.state)
    assert np.isnan(asked[3])
    result = safety.step(PERIOD, asked)
    assert result.holding and Check.NON_FINITE_TARGET.value in result.interventions.counts()


def test_a_tick_it_did_not_follow_makes_it_start_from_what_the_robot_was_given() -> None:
    start, far = _middle(), _middle() + 0.2
    safety, tracker = SafetyFilter(LIMITS), CapTracker(LIMITS, HEADROOM)
    safety.reset(0.0, start)
    for tick in range(1, 5):
        safety.step(tick * PERIOD, tracker.follow(tick * PERIOD, far, safety.state))
    for tick in range(5, 40):  # a hold: the filter alone, the tracker not asked
        safety.step(tick * PERIOD, None)
    resumed = tracker.follow(40 * PERIOD, far, safety.state)
    fresh = CapTracker(LIMITS, HEADROOM).follow(40 * PERIOD, far, safety.state)
    np.testing.assert_array_equal(resumed, fresh)  # no memory of the target before the hold


@pytest.mark.parametrize("headroom", [0.0, -0.5, 1.5, float("nan")])
def test_a_headroom_outside_zero_to_one_is_refused(headroom: float) -> None:
    with pytest.raises(ValueError, match="headroom"):
        tracker_limits(LIMITS, headroom)


def _jumpy_planner(clock, robot, latency_s: float = 0.3) -> InProcessPlanner:
    """Plans that swing every arm joint 0.4 rad in 0.24 s and back: well beyond the velocity cap."""

    def plan(request: PlanRequest) -> PlanOutcome:
        swing = 0.4 * np.sin(np.arange(37) * np.pi / 3)[:, None] * ~LIMITS.is_gripper
        return PlanOutcome(Plan(request.time, 12.5, robot.position + swing, "swing", 1.0), (1.0,), latency_s)

    return InProcessPlanner(plan, clock, latency_s)


def _swinging_loop(**settings):
    loop, robot, clock = make_loop(**settings)
    loop.planner = _jumpy_planner(clock, robot)
    return loop, robot, clock


def test_in_the_loop_the_tracker_takes_the_shaping_and_the_log_keeps_it_apart() -> None:
    plain, _, plain_clock = _swinging_loop(track_headroom=None)
    run(plain, plain_clock, 200)
    assert sum(plain.stats.nominal_interventions.values()) > 0 and not plain.stats.tracker_changes
    tracked, robot, clock = _swinging_loop(track_headroom=HEADROOM)
    results = run(tracked, clock, 200)
    assert sum(r.mode is Mode.AUTONOMOUS and r.target is not None for r in results) > 100
    assert not tracked.stats.nominal_interventions  # the filter, a net, had nothing to change
    assert sum(tracked.stats.tracker_changes.values()) > 0
    steps = np.abs(np.diff(np.array(robot.sent), axis=0))
    assert np.all(steps <= HEADROOM * LIMITS.velocity_max * PERIOD * (1 + 1e-9))
    counters = episode_counters(tracked.stats, PERIOD)["nominal_interventions"]
    tracker_keys = {key for key in counters if key.startswith(TRACKER_PREFIX)}
    assert tracker_keys and not ({key.removeprefix(TRACKER_PREFIX) for key in tracker_keys} - SAFETY_CHECKS)


def test_loop_settings_refuse_a_headroom_outside_zero_to_one() -> None:
    from eva_runtime.control.loop_settings import LoopSettings

    with pytest.raises(ValueError, match="track_headroom"):
        LoopSettings(track_headroom=0.0)
