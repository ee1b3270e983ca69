"""The re-seed precondition (control/reseed_check.py): fresh reading, arm at rest, grippers exempt."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.control.reseed_check import reseed_problem, rest_speed
from eva_runtime.embodiment import load_embodiment
from eva_runtime.robots.interface import Observation
from eva_runtime.safety import SafetyLimits
from tests.conftest import CALIBRATION

EMBODIMENT = load_embodiment(CALIBRATION / "aloha_sim.yaml")
LIMITS = SafetyLimits.from_embodiment(EMBODIMENT)
PERIOD, MAX_AGE = EMBODIMENT.control_period_s, 0.1

speeds = st.one_of(st.floats(min_value=-6.0, max_value=6.0), st.just(float("nan")))


@settings(max_examples=300, deadline=None)
@given(
    velocity=st.lists(speeds, min_size=LIMITS.dof, max_size=LIMITS.dof),
    age=st.floats(min_value=0.0, max_value=0.1),
)
def test_an_accepted_seed_is_within_one_capped_tick_of_where_the_arm_is(velocity: list[float], age: float) -> None:
    """Accepted: every arm joint, moving for the reading's whole allowed age, is within one tick of its cap."""
    v = np.array(velocity)
    problem = reseed_problem(Observation(0.0, np.zeros(LIMITS.dof), v), age, LIMITS, PERIOD, MAX_AGE)
    arm = ~LIMITS.is_gripper
    drift = np.abs(v[arm]) * MAX_AGE
    within = bool(np.all(drift <= LIMITS.velocity_max[arm] * PERIOD * (1 + 1e-12)))
    assert (problem is None) == within
    if problem is not None:
        assert "not at rest" in problem


def test_a_stale_reading_is_refused_whatever_the_velocity() -> None:
    still = Observation(0.0, np.zeros(LIMITS.dof), np.zeros(LIMITS.dof))
    assert "0.25 s old" in str(reseed_problem(still, 0.25, LIMITS, PERIOD, MAX_AGE))
    assert reseed_problem(still, float("nan"), LIMITS, PERIOD, MAX_AGE) is not None


def test_a_robot_without_velocities_is_checked_for_freshness_alone() -> None:
    assert reseed_problem(Observation(0.0, np.zeros(LIMITS.dof)), 0.05, LIMITS, PERIOD, MAX_AGE) is None


def test_the_rest_speed_for_the_piper_arms() -> None:
    arm = ~LIMITS.is_gripper
    assert np.all(rest_speed(LIMITS, PERIOD, MAX_AGE)[arm] == LIMITS.velocity_max[arm] * PERIOD / MAX_AGE)
    assert 0.4 < float(rest_speed(LIMITS, PERIOD, MAX_AGE)[arm].min()) < 0.6
