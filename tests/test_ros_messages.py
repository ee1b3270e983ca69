"""The ROS adapter's pure parts: message conversions and their validation, the topic conventions, the diagnostics
builder, and the episode session over the outcome log."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState

from eva_runtime.control.executor import Plan
from eva_runtime.records.episode_session import EpisodeSession
from eva_runtime.records.outcome_log import OutcomeLog
from eva_runtime.ros.conventions import resolve_topics
from eva_runtime.ros.diagnostics import PolicySnapshot, build_diagnostics
from eva_runtime.ros.messages import (
    MalformedMessageError,
    image_to_rgb,
    joint_state_to_arrays,
    joint_state_to_vector,
    plan_to_trajectory,
    rgb_to_image,
    seconds_to_stamp,
    stamp_to_seconds,
    tile_frames,
    vector_to_joint_state,
)

NAMES = [f"joint{i}" for i in range(7)]


def test_a_joint_state_round_trips_and_named_joints_are_reordered_by_name() -> None:
    values = np.arange(7) * 0.1
    position, velocity = joint_state_to_vector(vector_to_joint_state(values, NAMES, 12.5, values * 2), NAMES)
    assert np.array_equal(position, values) and np.array_equal(velocity, values * 2)
    shuffled = JointState(name=NAMES[::-1], position=values[::-1].tolist())
    assert np.array_equal(joint_state_to_vector(shuffled, NAMES)[0], values)
    unnamed = JointState(position=values.tolist(), velocity=[1.0, 2.0])  # a partial velocity is dropped
    position, velocity = joint_state_to_vector(unnamed, NAMES)
    assert np.array_equal(position, values) and velocity is None


def test_effort_round_trips_reordered_by_name_and_a_partial_one_reads_as_unmeasured() -> None:
    values = np.arange(7) * 0.1
    message = vector_to_joint_state(values, NAMES, 1.0, values * 2, values * 3)
    position, velocity, effort = joint_state_to_arrays(message, NAMES)
    assert np.array_equal(effort, values * 3) and np.array_equal(velocity, values * 2)
    shuffled = JointState(name=NAMES[::-1], position=values[::-1].tolist(), effort=(values * 3)[::-1].tolist())
    position, velocity, effort = joint_state_to_arrays(shuffled, NAMES)
    assert np.array_equal(position, values) and np.array_equal(effort, values * 3) and velocity is None
    partial = JointState(position=values.tolist(), effort=[1.0] * 6 + [math.nan])
    assert joint_state_to_arrays(partial, NAMES)[2] is None


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (JointState(name=NAMES[:6], position=[0.0] * 6), "6 positions, expected 7"),
        (JointState(position=[0.0] * 8), "8 positions"),
        (JointState(name=NAMES, position=[0.0, math.nan, 0, 0, 0, 0, 0]), "non-finite"),
        (JointState(name=NAMES, position=[math.inf] + [0.0] * 6), "non-finite"),
        (JointState(name=[*NAMES[:6], "gripper"], position=[0.0] * 7), "joint names"),
    ],
)
def test_a_malformed_joint_state_is_refused_with_the_reason(message: JointState, why: str) -> None:
    with pytest.raises(MalformedMessageError, match=why):
        joint_state_to_vector(message, NAMES)


def test_images_rgb_bgr_and_padded_rows_convert_to_rgb() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(4, 5, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(rgb_to_image(image, 1.0)), image)
    bgr = rgb_to_image(image[..., ::-1], 1.0)
    bgr.encoding = "bgr8"
    assert np.array_equal(image_to_rgb(bgr), image)
    padded = Image(height=4, width=5, encoding="rgb8", step=16)
    padded.data = np.concatenate([image.reshape(4, 15), np.zeros((4, 1), np.uint8)], axis=1).tobytes()
    assert np.array_equal(image_to_rgb(padded), image)
    for bad in (Image(height=4, width=5, encoding="mono8", step=5, data=bytes(20)), Image(height=4, width=5, step=15)):
        with pytest.raises(MalformedMessageError):
            image_to_rgb(bad)
    truncated = rgb_to_image(image, 1.0)
    truncated.data = truncated.data[:-1]
    with pytest.raises(MalformedMessageError, match="bytes"):
        image_to_rgb(truncated)


def test_stamps_tiles_and_trajectories() -> None:
    assert stamp_to_seconds(seconds_to_stamp(12.25)) == 12.25
    frames = [np.full((2, 3, 3), k, np.uint8) for k in range(3)]
    tiled = tile_frames([frames, frames[:1]])
    assert tiled.shape == (4, 9, 3) and tiled[3, 0, 0] == 0 and tiled[0, 8, 0] == 2 and tiled[3, 8, 0] == 0
    plan = Plan(start_time=3.0, fps=12.5, actions=np.arange(28, dtype=float).reshape(2, 14))
    trajectory = plan_to_trajectory(plan, [f"j{i}" for i in range(14)])
    assert len(trajectory.points) == 2 and trajectory.points[1].time_from_start.nanosec == 80_000_000
    assert trajectory.points[1].positions[0] == 14.0 and stamp_to_seconds(trajectory.header.stamp) == 3.0


def test_topic_conventions_and_overrides() -> None:
    classic = resolve_topics("classic", {})
    assert classic.follower_state == {"left": "/puppet/joint_left", "right": "/puppet/joint_right"}
    assert classic.command == {"left": "/master/joint_left", "right": "/master/joint_right"}
    # The leader arms publish on the command topics there: unusable for teleop until remapped.
    assert classic.leader_state == {} and "command topics" in classic.leader_unavailable
    remapped = resolve_topics("classic", {"leader_state.left": "/teach/left", "leader_state.right": "/teach/right"})
    assert remapped.leader_unavailable is None and remapped.leader_state["left"] == "/teach/left"
    newer = resolve_topics("joint_states", {"command.right": "/custom_r"})
    assert newer.follower_state["left"] == "/joint_states_single_l" and newer.command == {
        "left": "/joint_states_l",
        "right": "/custom_r",
    }
    with pytest.raises(ValueError, match="topic_convention"):
        resolve_topics("ros1", {})
    with pytest.raises(ValueError, match="coincide"):
        resolve_topics("classic", {"command.left": "/puppet/joint_left"})
    with pytest.raises(ValueError, match="absolute"):
        resolve_topics("classic", {"command.left": "master/joint_left"})


def test_diagnostics_levels_follow_what_the_operator_must_do() -> None:
    snapshot = PolicySnapshot(
        stamp=5.0,
        hardware_id="aloha_sim",
        mode="estop",
        lifecycle="active",
        homing=False,
        planner_alive=True,
        planner_ready=True,
        model_id="oracle",
        plans=3,
        rejected=0,
        planner_faults=0,
        plan_age_s=0.5,
        latency_last_s=0.3,
        latency_p50_s=0.3,
        frame_ages_s={"cam_high": 2.0},
        frame_timeout_s=0.5,
        state_ages_s={"left": 0.01, "right": 0.01},
        state_timeout_s=0.1,
        fault=None,
        interventions={"velocity": 4},
        rejected_messages={"/puppet/joint_left": 2},
        new_rejections=2,
        last_rejection={"/puppet/joint_left": "6 positions, expected 7"},
        tick_period_p50_s=0.02,
        tick_period_max_s=0.03,
        overruns=0,
    )
    statuses = {s.name: s for s in build_diagnostics("policy_node", snapshot).status}
    level = {name.split(": ")[1]: status.level for name, status in statuses.items()}
    assert level == {
        "planner": b"\x00",
        "cameras": b"\x01",  # stale frame: WARN
        "safety filter": b"\x00",
        "robot": b"\x02",  # ESTOP: ERROR, an operator must release it
        "inputs": b"\x01",  # refused messages since the last report
        "control loop": b"\x00",
    }
    inputs = {item.key: item.value for item in statuses["policy_node: inputs"].values}
    assert inputs["rejected /puppet/joint_left"] == "2"
    lost = dataclasses.replace(snapshot, held_command_failures=3, held_command_error="held.json: disk full")
    loop = next(s for s in build_diagnostics("policy_node", lost).status if s.name.endswith("control loop"))
    assert loop.level == b"\x01" and "held command not kept 3 times" in loop.message
    assert {item.key: item.value for item in loop.values}["held_command_error"] == "held.json: disk full"
    late = dataclasses.replace(snapshot, mode="hold", plans=0, expired_plans=4)
    planner = next(s for s in build_diagnostics("policy_node", late).status if s.name.endswith("planner"))
    assert planner.level == b"\x01" and "slower than its horizon" in planner.message
    assert {item.key: item.value for item in planner.values}["expired_plans"] == "4"


def test_an_episode_session_labels_one_episode_at_a_time_and_aborts_an_open_one_on_close(tmp_path: Path) -> None:
    with OutcomeLog(tmp_path / "log.db") as log:
        session = EpisodeSession(log, "aloha_sim", {"idm": "ab" * 32}, "oracle+idm", "0.1.0")
        first = session.start("transfer_cube", "hand the cube over", "seen")
        with pytest.raises(ValueError, match="still running"):
            session.start("transfer_cube", "again", "seen")
        session.update({"teleop_interventions": 1})
        assert session.end("failure", {"teleop_seconds": 0.5}, note="dropped it") == first
        with pytest.raises(ValueError, match="no episode"):
            session.end("success", {})
        second = session.start("transfer_cube", "hand the cube over", "unseen")
        session.close({"safety_interventions": {"velocity": 2}})
        records = {r.id: r for r in log.episodes()}
    assert (records[first].outcome, records[first].labelled_by, records[first].note) == (
        "failure",
        "operator",
        "dropped it",
    )
    assert records[first].teleop_interventions == 1 and records[first].failure_reason == "dropped it"
    assert (records[second].outcome, records[second].labelled_by) == ("aborted", "automatic")
    assert records[second].safety_interventions == {"velocity": 2}
