"""The two ramped slides that the safety filter follows exactly: homing to a pose, and the teleop handover onto
the leader arms. Neither makes the filter lag (no acceleration clamp) nor overshoot the pose it slides to."""

from __future__ import annotations

import numpy as np
import pytest

from eva_runtime.control.homing import HomingSlide
from eva_runtime.control.teleop import TeleopHandover
from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety import SafetyFilter, SafetyLimits
from eva_runtime.sim.bimanual_sim import START_POSE
from tests.conftest import CALIBRATION

LIMITS = SafetyLimits.from_embodiment(load_embodiment(CALIBRATION / "aloha_sim.yaml"))
DT = LIMITS.control_period_s


def inside(share: float) -> np.ndarray:
    """A pose at `share` of every joint's usable range (well away from the limits the filter brakes for)."""
    return LIMITS.soft_low + share * (LIMITS.soft_high - LIMITS.soft_low)


def follow(start: np.ndarray, target_of, ticks: int = 600) -> tuple[np.ndarray, list]:
    safety = SafetyFilter(LIMITS)
    safety.reset(0.0, start)
    commands, interventions = [start], []
    for tick in range(1, ticks):
        result = safety.step(tick * DT, target_of(tick))
        commands.append(result.command)
        interventions.extend(item.check.value for item in result.interventions)
    return np.array(commands), interventions


def assert_monotone_onto(commands: np.ndarray, start: np.ndarray, pose: np.ndarray) -> None:
    sign = np.sign(pose - start)
    assert np.all((pose - commands) * sign >= -1e-12)  # no joint ever passes the pose
    assert np.abs(commands[-1] - pose).max() <= 1e-9


def test_the_homing_slide_stops_on_the_pose_without_the_filter_overshooting() -> None:
    start = START_POSE + np.where(LIMITS.is_gripper, -0.5, 0.6)
    slide = HomingSlide(LIMITS, start, START_POSE, 0.3)
    commands, interventions = follow(start, lambda _: slide.target(DT))
    assert slide.arrived and "acceleration" not in interventions
    assert_monotone_onto(commands, start, START_POSE)
    speed = np.abs(np.diff(commands, axis=0)) / DT
    assert np.all(speed <= 0.3 * LIMITS.velocity_max + 1e-9)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_the_teleop_handover_ramps_onto_a_still_leader_and_does_not_overshoot(fraction: float) -> None:
    start, leader = inside(0.35), inside(0.6)
    handover = TeleopHandover(LIMITS, slide_speed_fraction=fraction)
    handover.start(start)
    commands, interventions = follow(start, lambda _: handover.target(leader, DT))
    assert handover.aligned and "acceleration" not in interventions
    assert_monotone_onto(commands, start, leader)
    speed = np.abs(np.diff(commands, axis=0)) / DT
    accelerating = TeleopHandover.TRACKING_FRACTION * LIMITS.acceleration_max
    assert np.all(speed[0] <= accelerating * DT + 1e-9)  # gets under way from rest, within the caps
    assert np.all(speed <= fraction * LIMITS.velocity_max + 1e-9)


def test_the_handover_catches_a_moving_leader_and_then_follows_it() -> None:
    start = inside(0.3)
    handover = TeleopHandover(LIMITS, slide_speed_fraction=0.5)
    handover.start(start)
    drift = np.where(LIMITS.is_gripper, 0.0, 0.05)  # rad/s: an operator moving the leader slowly

    def leader(tick: int) -> np.ndarray:
        return inside(0.45) + drift * tick * DT

    commands, interventions = follow(start, lambda tick: handover.target(leader(tick), DT), ticks=800)
    assert handover.aligned and "acceleration" not in interventions
    assert np.abs(commands[-1] - leader(799)).max() < 0.01
