"""Simulated cameras on their own thread (robots/sim_cameras.py): the frames a real-time loop gets without
rendering inside its tick are the frames a synchronous render gives of the same instant, on the cameras' time
grid, never from an earlier episode; a dead renderer is an error, not a silent stream of old frames."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from eva_runtime.embodiment import Embodiment, load_embodiment
from eva_runtime.robots.interface import RobotError
from eva_runtime.robots.mujoco_robot import MujocoRobot
from eva_runtime.safety import SafetyFilter

from .conftest import CALIBRATION

REPO = Path(__file__).resolve().parents[1]
CAMERA = "cam_high"


@pytest.fixture(scope="module")
def embodiment() -> Embodiment:
    return load_embodiment(CALIBRATION / "aloha_sim.yaml")


@pytest.fixture
def robots(embodiment: Embodiment):
    """A robot that streams cam_high and one that renders it when observed, driven alike."""
    streamed, synchronous = (
        MujocoRobot(embodiment, "transfer_cube", (CAMERA,)),
        MujocoRobot(embodiment, "transfer_cube"),
    )
    streamed.connect()
    synchronous.connect()
    yield streamed, synchronous
    streamed.disconnect()
    synchronous.disconnect()


def frame_at(robot: MujocoRobot, stamp: float, patience_s: float = 30.0):
    """The streamed frame stamped `stamp`, waiting for the camera thread to deliver it (not a timing claim: the
    patience only bounds a hang)."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        frame = robot.observe((CAMERA,)).frames.get(CAMERA)
        if frame is not None and frame.stamp >= stamp - 1e-9:
            return frame
        time.sleep(0.002)
    raise AssertionError(f"no frame stamped {stamp} within {patience_s} s")


def drive(robots, ticks: int, seed: int) -> float:
    """Reset both robots to `seed` and send them the same filtered commands; the streamed robot's time after."""
    streamed, synchronous = robots
    for robot in robots:
        robot.reset_episode(seed)
    observation = synchronous.observe(cameras=False)
    safety = SafetyFilter.for_embodiment(synchronous.embodiment)
    safety.reset(observation.stamp, observation.joint_position)
    target = observation.joint_position.copy()
    target[:6] += 0.3  # the left arm moves: successive frames differ
    for _ in range(ticks):
        result = safety.step(synchronous.now() + synchronous.embodiment.control_period_s, target)
        for robot in robots:
            robot.send(result)
    return streamed.now()


def test_a_streamed_frame_is_the_synchronous_render_of_its_instant_on_the_cameras_grid(robots) -> None:
    streamed, synchronous = robots
    camera_period = 1.0 / next(c.fps for c in streamed.embodiment.cameras if c.name == CAMERA)
    now = drive(robots, 10, seed=3)  # 10 ticks of 20 ms: frames are due at 0, 40, ..., 200 ms
    frame = frame_at(streamed, now)
    assert frame.stamp == pytest.approx(now) and round(frame.stamp / camera_period, 6).is_integer()
    expected = synchronous.observe((CAMERA,)).frames[CAMERA].image
    assert np.array_equal(frame.image, expected)
    first = drive(robots, 0, seed=3)
    assert not np.array_equal(frame_at(streamed, first).image, expected)  # the arm moved between the two frames


def test_a_new_episode_delivers_its_own_first_frame_at_once_never_an_old_one(robots) -> None:
    streamed, synchronous = robots
    drive(robots, 12, seed=5)
    streamed.reset_episode(6)
    synchronous.reset_episode(6)
    frame = streamed.observe((CAMERA,)).frames[CAMERA]  # no waiting: reset_episode rendered it
    assert frame.stamp == streamed.now() == 0.0
    assert np.array_equal(frame.image, synchronous.observe((CAMERA,)).frames[CAMERA].image)


def test_cameras_not_streamed_still_render_when_observed(robots) -> None:
    streamed, synchronous = robots
    drive(robots, 3, seed=1)
    wrist = streamed.observe(("cam_left_wrist",)).frames["cam_left_wrist"]
    assert wrist.stamp == streamed.now()
    assert np.array_equal(wrist.image, synchronous.observe(("cam_left_wrist",)).frames["cam_left_wrist"].image)


def test_an_unknown_streamed_camera_is_refused_at_construction(embodiment: Embodiment) -> None:
    with pytest.raises(RobotError, match="unknown camera"):
        MujocoRobot(embodiment, "transfer_cube", ("cam_top",))


def test_a_renderer_that_fails_stops_the_stream_with_an_error(embodiment: Embodiment) -> None:
    robot = MujocoRobot(embodiment, "transfer_cube", (CAMERA,))
    robot.connect()
    try:

        def no_renderer(height: int, width: int):
            raise RuntimeError("cannot create an off-screen MuJoCo renderer")

        robot.sim.snapshot_cameras = no_renderer  # the failure a machine without GL gives, on the camera thread
        with pytest.raises(RobotError, match="cameras stopped: cannot create"):
            robot.reset_episode(0)
        assert CAMERA not in robot.observe((CAMERA,)).frames  # absent: the loop counts it as stale and holds
    finally:
        robot.disconnect()


def test_streaming_needs_real_time_pacing_and_is_the_default_above_50_hz() -> None:
    from eva_runtime.control.loop_settings import LoopSettings

    with pytest.raises(ValueError, match="stream_cameras needs real-time pacing"):
        LoopSettings(stream_cameras=True, pace=False)
    default = LoopSettings()
    assert not default.streams_cameras(50.0) and default.streams_cameras(200.0)
    assert not LoopSettings(pace=False).streams_cameras(200.0)  # unpaced: renders in the tick, at any rate
    assert LoopSettings(stream_cameras=True).streams_cameras(50.0)
    assert not LoopSettings(stream_cameras=False).streams_cameras(200.0)


def test_a_paced_session_plans_from_streamed_frames(tmp_path: Path) -> None:
    from eva_runtime.control.sim_session import run_sim_episodes

    seen = []
    result = run_sim_episodes(
        REPO / "models" / "bundle_transfer_cube",
        "transfer_cube",
        1,
        1000,
        tmp_path / "log.db",
        max_steps=250,  # 5 s of real time: the first plan arrives in about 1 s on a quiet machine
        loop={"stream_cameras": True},
        on_tick=lambda index, episode_id, step, modes, stats: seen.append(stats),
    )
    assert result.plans >= 1
    assert seen and not any("stale frames" in event.detail for event in seen[-1].mode_events)
