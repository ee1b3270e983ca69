"""Varied demonstrations: warped timing and missed-then-corrected grasps, per seed, still the expert's task."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.embodiment import load_embodiment
from eva_runtime.records.hdf5_episodes import read_episode
from eva_runtime.robots.mujoco_robot import MujocoRobot
from eva_runtime.sim.demonstrations import record_demonstrations
from eva_runtime.sim.evaluation import ExpertPolicy, run_episode
from eva_runtime.sim.expert_variation import SCRIPT_STEPS, ExpertVariation, _time_warp
from eva_runtime.sim.experts import make_expert

from .conftest import CALIBRATION

VARIED = ExpertVariation(timing=0.3, miss_m=0.025, miss_share=1.0)


@pytest.fixture(scope="module")
def robot():
    robot = MujocoRobot(load_embodiment(CALIBRATION / "aloha_sim.yaml"), "transfer_cube")
    robot.connect()
    yield robot
    robot.disconnect()


def _steps(expert) -> tuple[list[int], list[int]]:
    return [w.step for w in expert.left.waypoints], [w.step for w in expert.right.waypoints]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"timing": 1.0}, "timing must be in"),
        ({"timing": -0.1}, "timing must be in"),
        ({"miss_m": 0.2}, "miss_m must be in"),
        ({"miss_share": 1.5}, "miss_share must be in"),
        ({"regrasp_share": -0.5}, "regrasp_share must be in"),
    ],
)
def test_variation_refuses_out_of_range_fields(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        ExpertVariation(**fields)


@settings(max_examples=60, deadline=None)
@given(timing=st.floats(0.0, 0.95), seed=st.integers(0, 2**31))
def test_time_warp_is_monotone_and_keeps_the_script_length(timing: float, seed: int) -> None:
    warp = _time_warp(timing, ExpertVariation.rng(seed))
    mapped = [warp(step) for step in range(SCRIPT_STEPS + 1)]
    assert mapped[0] == 0 and mapped[-1] == SCRIPT_STEPS
    assert all(b >= a for a, b in itertools.pairwise(mapped))
    # No 50-tick span is stretched or squeezed beyond the bounds (after the rescale to the script's length).
    spans = np.diff(mapped[::50])
    low, high = 50 * (1 - timing) / (1 + timing), 50 * (1 + timing) / (1 - timing)
    assert np.all(spans >= np.floor(low) - 1) and np.all(spans <= np.ceil(high) + 1)


def test_a_varied_script_is_deterministic_per_seed_and_keeps_its_order(robot) -> None:
    robot.reset_episode(3)
    nominal = _steps(make_expert("transfer_cube", robot.sim))
    first = _steps(make_expert("transfer_cube", robot.sim, variation=VARIED, seed=11))
    again = _steps(make_expert("transfer_cube", robot.sim, variation=VARIED, seed=11))
    other = _steps(make_expert("transfer_cube", robot.sim, variation=VARIED, seed=12))
    assert first == again and first != other
    for steps in (*first, *other):
        assert all(b > a for a, b in itertools.pairwise(steps)), steps
    # Both grasps missed first (share 1): one more waypoint per arm than the nominal script.
    assert [len(s) for s in first] == [len(s) + 1 for s in nominal]
    # An inactive variation is the nominal script.
    assert _steps(make_expert("transfer_cube", robot.sim, variation=ExpertVariation(), seed=11)) == nominal


def test_a_missed_grasp_arrives_off_the_cube_then_moves_onto_it(robot) -> None:
    robot.reset_episode(3)
    variation = ExpertVariation(miss_m=0.025, miss_share=1.0)
    expert = make_expert("transfer_cube", robot.sim, variation=variation, seed=5)
    miss, onto, close = expert.right.waypoints[1:4]
    missed_position, _ = miss.target(robot.sim)
    onto_position, _ = onto.target(robot.sim)
    off = missed_position - onto_position
    assert 0.0125 - 1e-9 <= np.linalg.norm(off[:2]) <= 0.025 + 1e-9 and off[2] == pytest.approx(0.01)
    assert np.allclose(onto_position, robot.sim.body_pose("box")[:3])  # the corrected target is the cube itself
    assert miss.step < onto.step < close.step == 150  # the closing keeps its nominal step
    assert miss.gripper == onto.gripper > close.gripper  # open while missing and correcting, then close


def test_a_regrasp_closes_on_the_miss_opens_and_then_closes_on_the_cube_on_schedule(robot) -> None:
    robot.reset_episode(3)
    regrasping = ExpertVariation(miss_m=0.025, miss_share=1.0, regrasp_share=1.0)
    expert = make_expert("transfer_cube", robot.sim, variation=regrasping, seed=5)
    miss, closed, reopened, onto, close = expert.right.waypoints[1:6]
    assert miss.step < closed.step < reopened.step < onto.step < close.step == 150
    assert closed.target is None and reopened.target is None  # the hand stays where it missed meanwhile
    assert miss.gripper == reopened.gripper == onto.gripper > closed.gripper == close.gripper
    assert np.allclose(onto.target(robot.sim)[0], robot.sim.body_pose("box")[:3])
    # The regrasp is drawn after the miss: the same seed misses by the same offset with or without regrasps.
    without = dataclasses.replace(regrasping, regrasp_share=0.0)
    plain = make_expert("transfer_cube", robot.sim, variation=without, seed=5)
    assert np.array_equal(plain.right.waypoints[1].target(robot.sim)[0], miss.target(robot.sim)[0])
    assert len(plain.right.waypoints) == len(expert.right.waypoints) - 2


def test_a_regrasping_expert_closes_twice_and_still_completes_the_task(robot) -> None:
    regrasping = ExpertVariation(miss_m=0.025, miss_share=1.0, regrasp_share=1.0)
    applied: list[np.ndarray] = []
    result = run_episode(
        robot, ExpertPolicy(regrasping), 4, 400, on_step=lambda _s, _o, a: applied.append(a), frames_every=10**6
    )
    closed = np.array(applied)[:, 13] < 0.5  # the right gripper's command
    closings = int(np.count_nonzero(closed[1:] & ~closed[:-1]))
    assert result.success and closings == 2


def test_missed_grasps_are_defined_only_where_the_script_has_them(robot) -> None:
    robot.reset_episode(0)
    from eva_runtime.sim.experts import ScriptedExpert

    with pytest.raises(ValueError, match="missed grasps are defined for"):
        VARIED.apply(ScriptedExpert(robot.sim), "insertion", ExpertVariation.rng(0))


def test_the_varied_expert_still_completes_the_task_on_other_timing(robot) -> None:
    def first_closing(variation) -> tuple[bool, int]:
        applied: list[np.ndarray] = []
        result = run_episode(
            robot, ExpertPolicy(variation), 4, 400, on_step=lambda _s, _o, a: applied.append(a), frames_every=10**6
        )
        right_gripper = np.array(applied)[:, 13]
        return result.success, int(np.argmax(right_gripper < 0.5))

    nominal_success, nominal_close = first_closing(None)
    varied_success, varied_close = first_closing(VARIED)
    assert nominal_success and varied_success
    assert varied_close != nominal_close


def test_recording_keeps_only_successes_when_asked_and_writes_the_variation(robot, tmp_path) -> None:
    seen = []
    recorded = record_demonstrations(
        robot, 2, tmp_path, fps=12.5, first_seed=2, max_steps=40, on_episode=seen.append,
        variation=VARIED, successful_only=True,
    )  # fmt: skip
    # 40 ticks cannot finish the task: both are reported, neither is written.
    assert len(seen) == 2 and all(item.path is None and not item.result.success for item in seen)
    assert recorded == [] and not list(tmp_path.glob("episode_*.hdf5"))
    manifest = json.loads((tmp_path / "variation.json").read_text())
    assert manifest["variation"] == VARIED.as_dict() and manifest["failed_seeds"] == [2, 3]
    kept = record_demonstrations(robot, 1, tmp_path / "all", fps=12.5, first_seed=2, max_steps=40, variation=VARIED)
    assert read_episode(kept[0].path).seed == 2  # without the flag a failed episode is written, with its seed


def test_a_nominal_recording_of_successes_only_lists_the_seeds_it_left_out(robot, tmp_path) -> None:
    record_demonstrations(robot, 1, tmp_path, fps=12.5, first_seed=5, max_steps=40, successful_only=True)
    manifest = json.loads((tmp_path / "variation.json").read_text())
    assert manifest["failed_seeds"] == [5] and manifest["variation"] == ExpertVariation().as_dict()


def test_task_progress_refuses_to_replay_a_varied_recording(robot) -> None:
    from eva_runtime.training.task_progress import TaskProgress

    applied: list[np.ndarray] = []
    run_episode(robot, ExpertPolicy(VARIED), 2, 120, on_step=lambda _s, _o, a: applied.append(a), frames_every=10**6)
    progress = TaskProgress("transfer_cube", robot.embodiment)
    try:
        with pytest.raises(ValueError, match="the replayed expert commands"):
            progress.start_state(2, 100, applied[100])
    finally:
        progress.close()
