"""The observed-frame history of plan requests (control/frame_history.py): frames kept at the model's fps, each
request's K frames at their slots, gaps and new episodes padded, and the loop and deployment that use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.control.frame_history import FrameHistory
from eva_runtime.robots.interface import CameraFrame, Observation
from tests.fakes import Clock, FakeRobot

REPOSITORY = Path(__file__).resolve().parents[1]
FPS, TICK = 12.5, 0.02


class StampedCameraRobot(FakeRobot):
    """Frames whose every pixel is the camera observation's number (mod 256), its stamp in `stamps`: which frame
    a window used is visible."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock, np.zeros(14))
        self.stamps: list[float] = []

    @property
    def camera_observations(self) -> int:
        return len(self.stamps)

    def observe(self, cameras=True) -> Observation:
        observation = super().observe(cameras=False)
        names = ("cam_high",) if cameras is True else tuple(cameras or ())
        frames = {}
        if names:
            value = len(self.stamps) % 256
            self.stamps.append(self.clock())
            frames = {n: CameraFrame(np.full((4, 4, 3), value, np.uint8), self.clock()) for n in names}
        return Observation(observation.stamp, observation.joint_position, frames=frames)

    def stamp_of(self, image: np.ndarray) -> float:
        return self.stamps[int(image[0, 0, 0])]


def _run(history: FrameHistory, robot: StampedCameraRobot, clock: Clock, seconds: float) -> None:
    for _ in range(round(seconds / TICK)):
        history.keep(robot, clock())
        clock.t += TICK


def test_a_request_carries_the_frames_at_the_models_fps_newest_last() -> None:
    clock = Clock()
    robot = StampedCameraRobot(clock)
    history = FrameHistory(5, FPS, ("cam_high",))
    _run(history, robot, clock, 1.0)
    assert robot.camera_observations == len(range(0, 50, 4))  # one per model frame (every 4th tick), not per tick
    clock.t += 0.04  # the request on the next model frame: every slot falls on a kept frame
    newest = robot.observe(cameras=("cam_high",)).frames
    window = history.window(newest)["cam_high"]
    assert window.shape == (5, 4, 4, 3)
    expected = [clock() - k / FPS for k in range(4, -1, -1)]
    assert [robot.stamp_of(frame) for frame in window] == pytest.approx(expected)


def test_a_new_episode_or_a_gap_pads_with_the_oldest_usable_frame() -> None:
    clock = Clock()
    robot = StampedCameraRobot(clock)
    history = FrameHistory(5, FPS, ("cam_high",))
    _run(history, robot, clock, 1.0)
    history.clear()
    newest = robot.observe(cameras=("cam_high",)).frames
    assert len({robot.stamp_of(f) for f in history.window(newest)["cam_high"]}) == 1  # the newest, five times
    _run(history, robot, clock, 0.2)  # frames at 0.0, 0.08, 0.16 s after the clear
    clock.t += 1.0  # then nothing kept for a second
    newest = robot.observe(cameras=("cam_high",)).frames
    stamps = [robot.stamp_of(f) for f in history.window(newest)["cam_high"]]
    assert stamps == [stamps[-1]] * 5  # every kept frame is a second away from its slot: none is used


def test_a_one_frame_history_never_observes_the_cameras() -> None:
    clock = Clock()
    robot = StampedCameraRobot(clock)
    history = FrameHistory(1, FPS, ("cam_high",))
    _run(history, robot, clock, 0.5)
    assert robot.camera_observations == 0
    newest = robot.observe(cameras=("cam_high",)).frames
    assert history.window(newest)["cam_high"].shape == (1, 4, 4, 3)
    with pytest.raises(ValueError, match="frames >= 1 and fps > 0"):
        FrameHistory(0, FPS, ("cam_high",))


@settings(deadline=None, max_examples=60)
@given(
    frames=st.integers(1, 6),
    gaps=st.lists(st.sampled_from([0.02, 0.04, 0.08, 0.3]), min_size=1, max_size=40),
    last=st.floats(0.0, 0.2),
)
def test_the_window_is_k_frames_in_time_order_each_near_its_slot_or_a_repeat(frames, gaps, last) -> None:
    clock = Clock()
    robot = StampedCameraRobot(clock)
    history = FrameHistory(frames, FPS, ("cam_high",))
    for gap in gaps:
        history.keep(robot, clock())
        clock.t += gap
    clock.t += last
    newest = robot.observe(cameras=("cam_high",)).frames
    window = history.window(newest)["cam_high"]
    stamps = [robot.stamp_of(f) for f in window]
    assert len(stamps) == frames and stamps[-1] == clock()
    assert stamps == sorted(stamps)  # oldest first
    repeats = len(stamps) - len(set(stamps))
    assert stamps[: repeats + 1] == [stamps[0]] * (repeats + 1)  # only the oldest used frame is repeated
    for k, stamp in enumerate(stamps[::-1][: frames - repeats]):  # every distinct frame sits near its slot
        assert abs(stamp - (clock() - k / FPS)) <= 0.5 / FPS + 1e-9


def test_the_loop_sends_the_history_and_the_deployment_sets_it_from_the_bundle() -> None:
    from eva_runtime.control.autonomous_loop import AutonomousLoop, LoopSettings
    from eva_runtime.control.deployment import Deployment
    from tests.test_autonomous_loop import ramp_planner, run

    clock = Clock()
    robot = StampedCameraRobot(clock)
    planner = ramp_planner(clock, robot)
    loop = AutonomousLoop(robot, planner, LoopSettings(pace=False, history_frames=5), clock=clock)
    loop.start(seed=1)
    run(loop, clock, 150)
    requests = planner.requests
    assert len(requests) >= 2
    later = requests[-1].frames["cam_high"]
    assert later.shape[0] == 5 and len({robot.stamp_of(f) for f in later}) == 5  # five distinct moments
    assert requests[0].frames["cam_high"].shape[0] == 5  # the first request, right after start: padded

    learned = Deployment.from_bundle(REPOSITORY / "models" / "bundle_transfer_cube_fgw2", "transfer_cube")
    oracle = Deployment.from_bundle(REPOSITORY / "models" / "bundle_transfer_cube", "transfer_cube")
    embodiment = robot.embodiment
    assert learned.loop_settings(LoopSettings(), embodiment).history_frames == 5
    assert oracle.loop_settings(LoopSettings(), embodiment).history_frames == 1
    assert learned.loop_settings(LoopSettings(history_frames=1), embodiment).history_frames == 1  # a ladder rung's
