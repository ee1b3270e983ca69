"""The gripper latch: open or closed with hysteresis, arms untouched, state carried in from the current command."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eva_runtime.control.executor import Plan, PlanExecutor
from eva_runtime.control.gripper_latch import GripperLatch
from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety.limits import SafetyLimits

from .conftest import CALIBRATION

LIMITS = SafetyLimits.from_embodiment(load_embodiment(CALIBRATION / "aloha_sim.yaml"))
LATCH = GripperLatch.for_limits(LIMITS, 0.35, 0.65)
GRIPPERS = list(LATCH.joints)


def _command(opening: float) -> np.ndarray:
    command = np.zeros(14)
    command[GRIPPERS] = opening
    return command


@settings(max_examples=200, deadline=None)
@given(
    openings=arrays(np.float64, (12, 14), elements=st.floats(0.0, 1.0)),
    start_open=st.booleans(),
)
def test_latched_grippers_take_two_levels_and_flip_only_past_a_threshold(openings, start_open) -> None:
    current = _command(LATCH.open_level[0] if start_open else LATCH.closed_level[0])
    latched = LATCH.apply(openings, current)
    arms = [j for j in range(14) if j not in GRIPPERS]
    assert np.array_equal(latched[:, arms], openings[:, arms])
    for k, joint in enumerate(GRIPPERS):
        is_open = latched[:, joint] == LATCH.open_level[k]
        assert np.all(is_open | (latched[:, joint] == LATCH.closed_level[k]))
        before = np.r_[start_open, is_open[:-1]]
        closed_here = before & ~is_open
        opened_here = ~before & is_open
        assert np.all(openings[closed_here, joint] < LATCH.close_below[k])
        assert np.all(openings[opened_here, joint] > LATCH.open_above[k])
        # inside the band nothing flips, whatever the state
        inside = (openings[:, joint] >= LATCH.close_below[k]) & (openings[:, joint] <= LATCH.open_above[k])
        assert not np.any((closed_here | opened_here) & inside)


def test_a_half_closed_approach_stays_open_until_the_plan_closes() -> None:
    """The failure it exists for: an imagined hand that arrives at 0.6-0.75 is commanded wide open, then shut."""
    approach = np.tile(_command(0.7), (6, 1))
    approach[:, GRIPPERS] = [[0.9, 0.9], [0.72, 0.9], [0.6, 0.9], [0.5, 0.9], [0.2, 0.9], [0.5, 0.9]]
    latched = LATCH.apply(approach, _command(0.9))
    right = GRIPPERS[0]
    assert list(latched[:, right]) == [LATCH.open_level[0]] * 4 + [LATCH.closed_level[0]] * 2


def test_the_executor_plays_latched_grippers_and_keeps_the_arms_curve() -> None:
    actions = np.tile(_command(0.5), (10, 1))
    actions[:, 0] = np.linspace(0.0, 0.5, 10)
    plan = Plan(start_time=0.0, fps=12.5, actions=actions)
    plain, latched = PlanExecutor(), PlanExecutor(gripper_latch=LATCH)
    for executor in (plain, latched):
        executor.install(plan, 0.0, _command(0.9))
    assert plain.target(0.4)[0] == pytest.approx(latched.target(0.4)[0])
    assert plain.target(0.4)[GRIPPERS[0]] == pytest.approx(0.5)
    assert latched.target(0.4)[GRIPPERS[0]] == pytest.approx(LATCH.open_level[0])  # 0.5 is inside the band


@pytest.mark.parametrize("band", [(0.0, 0.5), (0.7, 0.3), (0.5, 1.0)])
def test_a_band_outside_the_range_is_refused(band) -> None:
    with pytest.raises(ValueError, match="close_below"):
        GripperLatch.for_limits(LIMITS, *band)


def test_a_band_from_a_parameter_list_is_checked_whole() -> None:
    """The ROS parameter arrives as a list of doubles; the ladder's as a YAML list."""
    from eva_runtime.control.gripper_latch import checked_band

    assert checked_band([0.3, 0.6]) == (0.3, 0.6)
    for bad in ([0.3], [0.3, 0.6, 0.9], [0.6, 0.3], []):
        with pytest.raises(ValueError, match=r"got \["):
            checked_band(bad)
