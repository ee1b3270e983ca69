"""The simulated bimanual robot: determinism, cameras, joint layout, the filter-only send path, experts, records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eva_runtime.embodiment import Embodiment, load_embodiment
from eva_runtime.records.hdf5_episodes import read_episode
from eva_runtime.robots.interface import RobotError
from eva_runtime.robots.mujoco_robot import MujocoRobot
from eva_runtime.safety import FilterResult, FilterState, SafetyFilter
from eva_runtime.sim.bimanual_sim import ARM_JOINTS, START_POSE, centre_crop
from eva_runtime.sim.demonstrations import record_demonstrations
from eva_runtime.sim.evaluation import ExpertPolicy, run_episode
from eva_runtime.sim.experts import make_expert
from eva_runtime.sim.tasks import RIGHT_FINGERS, objects_inside_arms, task_spec

from .conftest import CALIBRATION


@pytest.fixture(scope="module")
def sim_embodiment() -> Embodiment:
    return load_embodiment(CALIBRATION / "aloha_sim.yaml")


@pytest.fixture(scope="module")
def cube_robot(sim_embodiment: Embodiment):
    robot = MujocoRobot(sim_embodiment, "transfer_cube")
    robot.connect()
    yield robot
    robot.disconnect()


def test_reset_is_deterministic_per_seed(cube_robot: MujocoRobot) -> None:
    cube_robot.reset_episode(7)
    first = cube_robot.observe()
    cube_pose = cube_robot.sim.body_pose("box")
    cube_robot.reset_episode(8)
    assert not np.allclose(cube_robot.sim.body_pose("box"), cube_pose)
    cube_robot.reset_episode(7)
    again = cube_robot.observe()
    assert np.array_equal(cube_robot.sim.body_pose("box"), cube_pose)
    assert np.array_equal(again.joint_position, first.joint_position)
    for name, frame in first.frames.items():
        assert np.array_equal(again.frames[name].image, frame.image)


def test_cameras_are_named_and_sized_like_the_embodiment(cube_robot: MujocoRobot) -> None:
    cube_robot.reset_episode(0)
    observation = cube_robot.observe()
    assert list(observation.frames) == [camera.name for camera in cube_robot.embodiment.cameras]
    assert list(observation.frames) == ["cam_high", "cam_left_wrist", "cam_right_wrist"]
    for camera in cube_robot.embodiment.cameras:
        frame = observation.frames[camera.name]
        assert frame.image.shape == (camera.height, camera.width, 3) and frame.image.dtype == np.uint8
        assert frame.stamp == observation.stamp == cube_robot.now()
        assert frame.image.std() > 5  # a real picture, not a blank buffer
    # The widened wrist cameras see the table and the other arm, not only their own gripper.
    assert not np.array_equal(observation.frames["cam_left_wrist"].image, observation.frames["cam_right_wrist"].image)
    assert not cube_robot.observe(cameras=False).frames
    assert list(cube_robot.observe(cameras=("cam_high",)).frames) == ["cam_high"]  # only what a loop will use
    with pytest.raises(RobotError, match="unknown camera"):
        cube_robot.observe(cameras=("cam_belly",))


def test_a_frame_that_is_not_square_is_the_centre_of_the_square_render(cube_robot: MujocoRobot) -> None:
    """A short cam_high keeps the top camera's width of table and drops the black rows above and below it, the
    same pixels on the physics thread and on a snapshot renderer."""
    cube_robot.reset_episode(3)
    sim = cube_robot.sim
    square = sim.render(("cam_high", "cam_right_wrist"), 128, 128)
    band = sim.render(("cam_high", "cam_right_wrist"), 76, 128)
    for name in square:
        assert band[name].shape == (76, 128, 3)
        assert np.array_equal(band[name], square[name][26:102])
    assert square["cam_high"][:26].max() < 10 and square["cam_high"][102:].max() < 10  # what the band drops
    assert band["cam_high"].std() > 5
    tall = sim.render(("cam_high",), 128, 100)["cam_high"]
    assert np.array_equal(tall, square["cam_high"][:, 14:114])
    cameras = sim.snapshot_cameras(76, 128)
    try:
        assert np.array_equal(cameras.render(sim.snapshot(), ("cam_high",))["cam_high"], band["cam_high"])
    finally:
        cameras.close()
    with pytest.raises(ValueError, match="cannot crop"):
        centre_crop(square["cam_high"], 130, 128)


def test_joint_order_matches_the_embodiment_file(cube_robot: MujocoRobot) -> None:
    names = cube_robot.embodiment.joint_names
    expected = [f"{side}_{joint}" for side in ("left", "right") for joint in (*ARM_JOINTS, "gripper")]
    assert list(names) == expected
    pose = START_POSE.copy()
    pose[:6] += np.linspace(0.05, 0.3, 6)  # a distinct value for each joint
    pose[7:13] -= np.linspace(0.05, 0.3, 6)
    pose[[6, 13]] = [0.3, 0.8]
    cube_robot.sim.reset(pose, {})
    assert np.allclose(cube_robot.observe(cameras=False).joint_position, pose, atol=1e-12)


def test_send_accepts_only_filter_results_and_returns_what_it_applied(cube_robot: MujocoRobot) -> None:
    cube_robot.reset_episode(0)
    observation = cube_robot.observe(cameras=False)
    safety = SafetyFilter.for_embodiment(cube_robot.embodiment)
    safety.reset(observation.stamp, observation.joint_position)
    target = observation.joint_position + 0.01
    result = safety.step(cube_robot.now() + 0.02, target, observation.joint_position)
    before = cube_robot.now()
    applied = cube_robot.send(result)
    assert np.array_equal(applied, result.command)
    assert cube_robot.now() == pytest.approx(before + 0.02)
    with pytest.raises(TypeError, match="safety-filter results only"):
        cube_robot.send(target)  # type: ignore[arg-type]
    bad = np.full(14, np.nan)
    forged = FilterResult(FilterState(0.0, bad, bad, bad), (), ())
    with pytest.raises(RobotError, match="malformed"):
        cube_robot.send(forged)


@pytest.mark.parametrize("rate", [100.0, 200.0])
def test_simulation_steps_at_the_embodiment_control_rate(sim_embodiment: Embodiment, rate: float) -> None:
    robot = MujocoRobot(sim_embodiment.model_copy(update={"control_rate_hz": rate}), "transfer_cube")
    robot.connect()
    robot.reset_episode(0)
    observation = robot.observe(cameras=False)
    safety = SafetyFilter.for_embodiment(robot.embodiment)
    safety.reset(observation.stamp, observation.joint_position)
    before = robot.now()
    robot.send(safety.step(before + 1 / rate, observation.joint_position, observation.joint_position))
    assert robot.now() == pytest.approx(before + 1 / rate)
    assert robot.sim.model.opt.timestep <= 0.002 + 1e-12  # never a coarser physics step than the scene's
    robot.disconnect()


@pytest.mark.parametrize(("task", "seed"), [("transfer_cube", 101), ("transfer_cube", 102), ("insertion", 101)])
def test_expert_succeeds_through_the_safety_filter(sim_embodiment: Embodiment, task: str, seed: int) -> None:
    robot = MujocoRobot(sim_embodiment, task)
    robot.connect()
    result = run_episode(robot, ExpertPolicy(), seed, 400)
    robot.disconnect()
    assert result.success, result
    assert result.fault is None and result.steps == 400
    assert result.stage == len(robot.stages) == robot.furthest_stage()  # the last stage is the success itself
    assert robot.closest_reach_m() < 0.05  # a centred grasp reads ~4 cm (finger geom centres sit above the tips)


def test_success_needs_the_handover_finished_and_stages_come_in_order(cube_robot: MujocoRobot) -> None:
    cube_robot.reset_episode(3)
    assert not cube_robot.success()  # cube on the table
    safety = SafetyFilter.for_embodiment(cube_robot.embodiment)
    sim = cube_robot.sim
    safety.reset(sim.time, sim.joint_positions())
    expert = make_expert("transfer_cube", sim)
    assert cube_robot.furthest_stage() == 0
    spec = task_spec("transfer_cube")
    first_at: dict[int, int] = {}
    for step in range(300):  # both grippers hold the cube at step ~300: not yet a success
        cube_robot.send(safety.step(sim.time + 0.02, expert(sim, step), sim.joint_positions()))
        first_at.setdefault(spec.stage(sim), step)
    assert sim.body_pose("box")[2] > 0.1
    assert not cube_robot.success()
    # touched, lifted, then held by both, in that order; the furthest stage is kept, not the current one
    assert first_at[1] < first_at[2] < first_at[3] and 4 not in first_at
    assert cube_robot.furthest_stage() == 3 and cube_robot.stages[2] == "both holding"
    assert objects_inside_arms(sim) == []  # a grip is a contact, not an object inside a finger
    cube_robot.reset_episode(3)
    assert cube_robot.furthest_stage() == 0 and cube_robot.closest_reach_m() is None


def test_policy_that_returns_nan_is_held_and_counted(cube_robot: MujocoRobot) -> None:
    class Broken:
        needs_cameras = False

        def reset(self, robot, seed):
            pass

        def act(self, observation):
            return np.full(14, np.nan)

    cube_robot.reset_episode(0)
    start = cube_robot.observe(cameras=False).joint_position
    result = run_episode(cube_robot, Broken(), 0, 20)
    assert not result.success and result.steps == 20
    assert result.interventions["non_finite_target"] == 20 * 14
    assert np.allclose(cube_robot.observe(cameras=False).joint_position, start, atol=0.02)


def test_wall_clock_limit_ends_the_episode_as_a_failure(cube_robot: MujocoRobot) -> None:
    result = run_episode(cube_robot, ExpertPolicy(), 0, 400, wall_limit_s=0.0)
    assert result.timed_out and not result.success and result.steps == 1


def test_recorded_demonstration_round_trips(cube_robot: MujocoRobot, tmp_path: Path) -> None:
    recorded = record_demonstrations(cube_robot, 1, tmp_path, fps=25.0, first_seed=4, max_steps=30)
    episode = read_episode(recorded[0].path)
    assert episode.length == 15 and recorded[0].frames == 15
    assert set(episode.images) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    assert episode.images["cam_high"].shape == (15, 128, 128, 3)
    assert episode.fps == 25.0 and episode.seed == 4 and episode.task == "transfer_cube"
    assert episode.joint_names == cube_robot.embodiment.joint_names
    assert "cube" in episode.instruction
    # Recording is reproducible from the seed.
    again = record_demonstrations(cube_robot, 1, tmp_path / "again", fps=25.0, first_seed=4, max_steps=30)
    repeat = read_episode(again[0].path)
    assert np.array_equal(repeat.action, episode.action) and np.array_equal(repeat.qpos, episode.qpos)
    assert np.array_equal(repeat.images["cam_left_wrist"], episode.images["cam_left_wrist"])
    # action is the command sent, qpos the measurement: the arm lags its command while moving.
    assert not np.allclose(episode.action, episode.qpos)


def test_missing_gl_backend_gives_a_clear_error() -> None:
    """With an unusable MUJOCO_GL the first render fails with a message naming the backend and the fix."""
    import subprocess
    import sys

    script = (
        "from eva_runtime.sim.bimanual_sim import BimanualSim\n"
        "sim = BimanualSim('transfer_cube')\n"
        "try:\n"
        "    sim.render(('cam_high',), 32, 32)\n"
        "except RuntimeError as error:\n"
        "    print('ERROR:', error)\n"
    )
    env = {**__import__("os").environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    output = result.stdout + result.stderr
    assert "MUJOCO_GL=osmesa" in output and "MUJOCO_GL=egl" in output, output[-2000:]


def test_an_object_placed_into_an_arm_is_found(cube_robot: MujocoRobot) -> None:
    """What the sim node's ~/reset refuses: a cube placed where a finger is would be thrown out by the solver."""
    cube_robot.reset_episode(3)
    sim = cube_robot.sim
    assert objects_inside_arms(sim) == []
    finger = sim.data.geom_xpos[sim.model.geom(RIGHT_FINGERS[0]).id].copy()
    sim.reset(sim.joint_positions(), {"box": np.r_[finger, 1.0, 0.0, 0.0, 0.0]})
    assert any(pair.startswith("red_box-vx300s_right") for pair in objects_inside_arms(sim))
