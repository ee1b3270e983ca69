"""Path-preserving retiming (control/retiming.py) and the executor playing retimed plans: within the joints'
velocity and acceleration caps at any sampling rate, the same path, unchanged where a plan is within the caps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eva_runtime.control.executor import Plan, PlanExecutor, bspline_at
from eva_runtime.control.retiming import TimeMap, bspline_derivatives, retime

FPS = 12.5
DOF = 4
VELOCITY_MAX = np.array([2.67, 2.67, 2.67, 2.0])
ACCELERATION_MAX = np.array([10.0, 10.0, 10.0, 10.0])

plans = arrays(np.float64, st.tuples(st.integers(4, 40), st.just(DOF)), elements=st.floats(-2.0, 2.0))


def _sampled(actions: np.ndarray, timing: TimeMap, dt: float) -> np.ndarray:
    """The curve at ticks `dt` apart over the plan's span (past its end the next plan takes over)."""
    return np.array([bspline_at(actions, timing.index_at(t)) for t in np.arange(0.0, timing.duration, dt)])


@settings(max_examples=60, deadline=None)
@given(plans, st.sampled_from([0.02, 0.005]), st.floats(0.3, 1.0))
def test_retimed_curve_stays_within_the_caps_at_any_tick(actions, dt, headroom) -> None:
    timing = retime(actions, FPS, VELOCITY_MAX, ACCELERATION_MAX, headroom)
    points = _sampled(actions, timing, dt)
    velocity = np.diff(points, axis=0) / dt
    acceleration = np.diff(velocity, axis=0) / dt
    # Finite differences over a tick see the caps up to the discretisation (a tick straddling a grid point).
    assert np.all(np.abs(velocity) <= VELOCITY_MAX * (headroom + 0.05) + 1e-9)
    assert np.all(np.abs(acceleration) <= ACCELERATION_MAX * 1.05 + 1e-9)
    assert timing.duration >= (len(actions) - 1) / FPS - 1e-9  # never faster than the plan


@settings(max_examples=40, deadline=None)
@given(plans, st.floats(0.0, 1.0))
def test_retiming_keeps_the_path_and_its_order(actions, fraction) -> None:
    timing = retime(actions, FPS, VELOCITY_MAX, ACCELERATION_MAX)
    assert np.all(np.diff(timing.times) > 0) and np.all(np.diff(timing.indices) > 0)
    assert timing.index_at(0.0) == 0.0 and timing.index_at(timing.duration) == len(actions) - 1
    ticks = np.linspace(0.0, timing.duration, 50)
    assert np.all(np.diff([timing.index_at(t) for t in ticks]) >= 0)  # never runs the path backwards
    index = timing.index_at(fraction * timing.duration)
    assert 0.0 <= index <= len(actions) - 1


def test_a_plan_within_the_caps_is_played_at_its_own_rate() -> None:
    actions = np.linspace(0.0, 0.5, 37)[:, None] * np.ones(DOF)  # 0.17 rad/s
    timing = retime(actions, FPS, VELOCITY_MAX, ACCELERATION_MAX)
    assert timing.duration == pytest.approx(36 / FPS)
    assert timing.index_at(1.0) == pytest.approx(FPS)


def test_a_gripper_snap_slows_every_joint_together() -> None:
    actions = np.zeros((37, DOF))
    actions[:, 0] = np.linspace(0.0, 0.6, 37)  # an arm joint moving steadily
    actions[18:, 3] = 0.9  # the gripper closes between two frames: 11 /s at the planner's rate
    timing = retime(actions, FPS, VELOCITY_MAX, ACCELERATION_MAX)
    assert timing.duration > 36 / FPS + 0.3
    rates = np.diff(timing.indices) / np.diff(timing.times)
    slowest = np.argmin(rates)
    assert 15 <= timing.indices[slowest] <= 20  # slowed around the snap, not elsewhere
    assert rates[0] == pytest.approx(FPS, rel=0.05)  # full speed far from it


def test_derivatives_match_finite_differences_of_the_curve() -> None:
    actions = np.random.default_rng(3).normal(size=(12, DOF))
    positions = np.array([0.3, 2.5, 5.75, 9.1])
    first, second = bspline_derivatives(actions, positions)
    h = 1e-4
    ahead = np.array([bspline_at(actions, p + h) for p in positions])
    behind = np.array([bspline_at(actions, p - h) for p in positions])
    here = np.array([bspline_at(actions, p) for p in positions])
    np.testing.assert_allclose(first, (ahead - behind) / (2 * h), atol=1e-6)
    np.testing.assert_allclose(second, (ahead - 2 * here + behind) / h**2, atol=1e-3)


def test_executor_plays_a_retimed_plan_within_the_caps_and_replans_on_schedule() -> None:
    actions = np.zeros((37, DOF))
    actions[18:, 3] = 0.9
    plan = Plan(start_time=0.0, fps=FPS, actions=actions)
    plain, retimed = PlanExecutor(blend_s=0.0), PlanExecutor(blend_s=0.0, caps=(VELOCITY_MAX, ACCELERATION_MAX))
    for executor in (plain, retimed):
        executor.install(plan, 0.0, actions[0])
    ticks = np.arange(0.0, plan.end_time, 0.02)
    fast = np.array([plain.target(t) for t in ticks])
    slow = np.array([retimed.target(t) for t in ticks])
    assert np.max(np.abs(np.diff(fast[:, 3]))) / 0.02 > VELOCITY_MAX[3]  # the filter would have clamped this
    assert np.max(np.abs(np.diff(slow[:, 3]))) / 0.02 <= VELOCITY_MAX[3]
    assert retimed.usable_until == plain.usable_until  # the next plan is asked for on the same schedule
    with pytest.raises(ValueError, match="headroom"):
        retime(actions, FPS, VELOCITY_MAX, ACCELERATION_MAX, headroom=0.0)
