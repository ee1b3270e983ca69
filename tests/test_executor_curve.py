"""The executor's B-spline: inside its knots' range, continuous in velocity and acceleration within a plan and
across junctions, exact on straight lines, with a bounded history; the linear curve is the former executor's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eva_runtime.control.executor import Plan, PlanExecutor, bspline_at

FPS = 12.5
PERIOD = 0.02  # the 50 Hz control tick

actions_strategy = st.integers(2, 12).flatmap(
    lambda count: arrays(np.float64, (count, 3), elements=st.floats(-3.0, 3.0, allow_nan=False))
)


def sampled(executor: PlanExecutor, begin: float, end: float, step: float) -> np.ndarray:
    return np.array([executor.target(t) for t in np.arange(begin, end, step)])


@settings(max_examples=200, deadline=None)
@given(actions=actions_strategy, position=st.floats(-5.0, 20.0))
def test_the_curve_never_leaves_the_range_of_its_knots(actions: np.ndarray, position: float) -> None:
    point = bspline_at(actions, position)
    assert np.all(point >= actions.min(axis=0) - 1e-12)
    assert np.all(point <= actions.max(axis=0) + 1e-12)


@settings(max_examples=100, deadline=None)
@given(actions=actions_strategy, start=st.floats(0.0, 1.0), now=st.floats(0.0, 2.0), sent=st.floats(-3.0, 3.0))
def test_a_junction_stays_inside_the_range_of_the_knots_and_the_sent_command(actions, start, now, sent) -> None:
    plan = Plan(start_time=start, fps=FPS, actions=actions)
    executor = PlanExecutor(blend_s=0.2)
    if now >= plan.end_time:
        return
    executor.install(plan, now, np.full(3, sent))
    low = np.minimum(actions.min(axis=0), sent) - 1e-9
    high = np.maximum(actions.max(axis=0), sent) + 1e-9
    for t in np.linspace(now, executor.usable_until, 25):
        target = executor.target(t)
        assert np.all(target >= low) and np.all(target <= high)


def test_a_straight_line_is_reproduced_exactly_away_from_the_ends() -> None:
    actions = np.linspace(0.0, 1.0, 10)[:, None] * np.array([[1.0, -2.0]])
    for position in np.linspace(1.0, 8.0, 29):
        expected = np.interp(position, np.arange(10), actions[:, 0]) * np.array([1.0, -2.0])
        assert np.allclose(bspline_at(actions, position), expected)


def _finite_differences(samples: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    velocity = np.diff(samples, axis=0) / step
    acceleration = np.diff(velocity, axis=0) / step
    jerk = np.diff(acceleration, axis=0) / step
    return velocity, acceleration, jerk


def _wavy(start: float, phase: float) -> Plan:
    times = np.arange(37) / FPS
    return Plan(start_time=start, fps=FPS, actions=np.stack([np.sin(times + phase), np.cos(2 * times)], axis=1))


@pytest.mark.parametrize("interpolation", ["bspline", "linear"])
def test_acceleration_is_bounded_across_knots_and_junctions_only_for_the_bspline(interpolation: str) -> None:
    """Fine sampling: a velocity step shows up as an acceleration spike of order (jump / step). The B-spline's
    acceleration stays bounded as the sampling step shrinks; the linear curve's grows with 1 / step."""
    peaks = []
    for step in (1e-3, 2.5e-4):
        executor = PlanExecutor(blend_s=0.2, interpolation=interpolation)
        executor.install(_wavy(0.0, 0.0), 0.3, np.zeros(2))
        first = sampled(executor, 0.3, 1.0, step)
        sent = executor.target(1.0)
        executor.install(_wavy(0.6, 0.7), 1.0, sent)  # a plan that disagrees with the motion in progress
        second = sampled(executor, 1.0, 2.0, step)
        _, acceleration, _ = _finite_differences(np.concatenate([first, second]), step)
        peaks.append(np.abs(acceleration).max())
    if interpolation == "bspline":
        assert peaks[1] < 1.1 * peaks[0]
    else:
        assert peaks[1] > 3.0 * peaks[0]


def test_the_junction_starts_at_the_sent_command_with_the_executed_velocity() -> None:
    executor = PlanExecutor(blend_s=0.2)
    executor.install(_wavy(0.0, 0.0), 0.3, np.zeros(2))
    step = 1e-4
    before = np.array([executor.target(1.0 - step), executor.target(1.0)])
    sent = executor.target(1.0) + np.array([0.01, -0.02])  # the filter changed what was sent a little
    executor.install(_wavy(0.6, 0.7), 1.0, sent)
    after = np.array([executor.target(1.0), executor.target(1.0 + step)])
    assert np.allclose(after[0], sent)
    assert np.allclose((after[1] - after[0]) / step, (before[1] - before[0]) / step, atol=1e-2)


def test_a_plan_after_a_hold_starts_from_rest_at_the_sent_command() -> None:
    executor = PlanExecutor(blend_s=0.2)
    executor.install(_wavy(0.0, 0.0), 0.3, np.zeros(2))
    held = np.array([0.4, -0.4])
    executor.install(_wavy(5.0, 0.3), 5.5, held)  # the first plan ran out long ago: the robot was held
    step = 1e-4
    assert np.allclose(executor.target(5.5), held)
    assert np.allclose((executor.target(5.5 + step) - held) / step, 0.0, atol=1e-2)


def test_back_to_back_installs_keep_the_history_short() -> None:
    executor = PlanExecutor(blend_s=0.2)
    now = 0.0
    for index in range(200):
        executor.install(_wavy(now - 0.1, 0.01 * index), now, executor.target(now) if index else np.zeros(2))
        now += 0.05  # faster than the blend: chains form, then settle
    depth, node = 0, executor._trajectory
    while node is not None:
        depth, node = depth + 1, node.previous
    assert depth <= 6
    assert np.all(np.isfinite(executor.target(now)))


def test_the_linear_curve_is_the_former_executor() -> None:
    executor = PlanExecutor(blend_s=0.2, interpolation="linear")
    plan = Plan(start_time=0.0, fps=10.0, actions=np.arange(10, dtype=float)[:, None] * np.ones((1, 2)))
    executor.install(plan, now=0.5, current_command=np.full(2, -10.0))
    for t in (0.5, 0.55, 0.6, 0.65):
        weight = (t - 0.5) / 0.2
        assert np.allclose(executor.target(t), (1 - weight) * -10.0 + weight * plan.at(t))
    assert np.allclose(executor.target(0.83), plan.at(0.83))


def test_an_unknown_interpolation_is_refused() -> None:
    with pytest.raises(ValueError, match="interpolation"):
        PlanExecutor(interpolation="cubic")
