"""PiperRobot through piper-sdk against two simulated arms on python-can virtual buses.

The simulated arm (:class:`VirtualPiperArm`) decodes and encodes the CAN frames itself, so these tests check the
SDK usage against the documented protocol. Timeouts here are upper bounds for waiting on frames, never timing
expectations.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from eva_runtime.embodiment import load_embodiment
from eva_runtime.robots.interface import CameraFrame, RobotError
from eva_runtime.robots.piper import (
    FirmwareLimitError,
    PiperRobot,
    PiperRobotConfig,
    PiperTimeoutError,
)
from eva_runtime.robots.piper.virtual_arm import DEFAULT_LIMITS, VirtualJointLimits, VirtualPiperArm
from eva_runtime.safety import FilterResult, FilterState, SafetyFilter
from tests.conftest import CALIBRATION

COBOT = load_embodiment(CALIBRATION / "cobot_magic.yaml")
QUANTUM = math.pi / 180000  # 0.001 degree in rad
START = (0, 5000, -10000, 2000, -3000, 4000)  # 0.001 degree, inside every joint's range
FAST_FAIL = {"feedback_timeout_s": 0.3, "enable_timeout_s": 0.3, "limit_query_timeout_s": 0.3}


def wait_for(condition, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


@pytest.fixture
def channels(request: pytest.FixtureRequest) -> tuple[str, str]:
    tag = f"{request.node.name}-{uuid.uuid4().hex[:8]}"
    return f"{tag}-left", f"{tag}-right"


def make_robot(channels: tuple[str, str], cameras=None, **settings: object) -> PiperRobot:
    return PiperRobot(COBOT, PiperRobotConfig.bimanual(*channels, interface="virtual", **settings), cameras)


@pytest.fixture
def rig(channels: tuple[str, str]) -> Iterator[tuple[PiperRobot, VirtualPiperArm, VirtualPiperArm]]:
    left = VirtualPiperArm(channels[0], joints=START, gripper=20000).start()
    right = VirtualPiperArm(channels[1], joints=START, gripper=40000).start()
    robot = make_robot(channels)
    try:
        robot.connect()
        yield robot, left, right
    finally:
        robot.disconnect()
        left.stop()
        right.stop()


def result_of(command: np.ndarray) -> FilterResult:
    """A filter result carrying exactly ``command`` (the values under test, without the filter's own steps)."""
    command = np.asarray(command, dtype=np.float64)
    return FilterResult(FilterState(0.0, command, np.zeros_like(command), command), (), ())


# ---- connect ----------------------------------------------------------------------------------------------------
def test_connect_enables_both_arms_and_reads_their_limits(rig) -> None:
    robot, left, right = rig
    assert left.enabled and right.enabled
    for arm in (left, right):
        queried = {(data[0], data[1]) for can_id, data in arm.received if can_id == 0x472}
        assert queried == {(joint, content) for joint in range(1, 7) for content in (0x01, 0x02)}
        assert arm.reset_requests == 0 and arm.disable_requests == 0
    j2 = robot.firmware_limits["left"][1]
    assert (j2.position_min, j2.position_max) == (0.0, pytest.approx(math.pi))
    assert (j2.velocity_max, j2.acceleration_max) == (3.0, pytest.approx(5.0))


def test_limits_are_checked_before_anything_is_enabled(channels) -> None:
    # The limit query goes out before the enable; a refusal therefore leaves the arms as they were.
    with VirtualPiperArm(channels[0]) as left, VirtualPiperArm(channels[1]) as right:
        robot = make_robot(channels)
        robot.connect()
        robot.disconnect()
        ids = [can_id for can_id, _ in left.received]
        assert ids.index(0x471) > max(i for i, can_id in enumerate(ids) if can_id == 0x472)
        assert right.enabled


def test_enable_times_out_clearly_when_no_arm_is_on_the_bus(channels) -> None:
    robot = make_robot(channels, **FAST_FAIL)
    with pytest.raises(PiperTimeoutError, match=r"left arm \(virtual:.*-left\): no feedback within 0.3 s"):
        robot.connect()
    with pytest.raises(RobotError, match="not connected"):
        robot.observe()


def test_enable_times_out_clearly_when_the_arm_never_confirms(channels) -> None:
    with VirtualPiperArm(channels[0], answer_enable=False) as left, VirtualPiperArm(channels[1]):
        robot = make_robot(channels, **FAST_FAIL)
        with pytest.raises(PiperTimeoutError) as caught:
            robot.connect()
        message = str(caught.value)
        assert "left arm" in message and "enable not confirmed within 0.3 s" in message
        assert "drives 1, 2, 3, 4, 5, 6, gripper still report disabled" in message
        assert any(can_id == 0x471 for can_id, _ in left.received)  # it did ask, more than once
        assert left.disable_requests == 0 and left.reset_requests == 0


def test_unanswered_limit_query_times_out_naming_the_drives(channels) -> None:
    with VirtualPiperArm(channels[0]), VirtualPiperArm(channels[1], answer_limits=False) as right:
        robot = make_robot(channels, **FAST_FAIL)
        with pytest.raises(PiperTimeoutError, match=r"right arm .*drives \[1, 2, 3, 4, 5, 6\] did not answer"):
            robot.connect()
        assert not right.enabled


CORRUPTIONS = {
    "min equals max": (3, VirtualJointLimits(0, 0)),
    "min above max": (1, VirtualJointLimits(-1500, 1500)),
    "wider than the SDK table": (1, VirtualJointLimits(1800, -1800)),
    "narrower than the embodiment": (4, VirtualJointLimits(500, -1000)),
    "speed cap 0x7FFF (the 'invalid' marker)": (5, VirtualJointLimits(700, -700, max_speed=0x7FFF)),
    "speed cap zero": (6, VirtualJointLimits(1200, -1200, max_speed=0)),
    "speed cap below the embodiment": (2, VirtualJointLimits(1800, 0, max_speed=1000)),
    "acceleration 0x7FFF": (2, VirtualJointLimits(1800, 0, max_acceleration=0x7FFF)),
    "acceleration zero": (3, VirtualJointLimits(0, -1700, max_acceleration=0)),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_implausible_firmware_limits_refuse_connect_before_enabling(channels, kind: str) -> None:
    joint, corrupt = CORRUPTIONS[kind]
    limits = list(DEFAULT_LIMITS)
    limits[joint - 1] = corrupt
    with VirtualPiperArm(channels[0]) as left, VirtualPiperArm(channels[1], limits=limits) as right:
        robot = make_robot(channels)
        with pytest.raises(FirmwareLimitError, match=f"right arm joint {joint}: ") as caught:
            robot.connect()
        assert "(allowed: " in str(caught.value)
        assert not any(can_id == 0x471 for can_id, _ in left.received + right.received)
        assert not right.enabled and not left.enabled


def test_connect_refuses_an_arm_in_emergency_stop_and_never_resets_it(channels) -> None:
    with VirtualPiperArm(channels[0]) as left, VirtualPiperArm(channels[1]):
        left.set_arm_status(0x01)
        robot = make_robot(channels)
        with pytest.raises(RobotError, match=r"arm status 0x01 \(emergency stop\).*never sends the reset"):
            robot.connect()
        assert left.reset_requests == 0 and not left.enabled


def test_a_channel_cannot_be_opened_twice(rig, channels) -> None:
    with pytest.raises(RobotError, match="already open"):
        make_robot(channels).connect()


# ---- feedback ---------------------------------------------------------------------------------------------------
def test_feedback_converts_to_the_embodiment_within_one_quantum(rig) -> None:
    robot, left, _right = rig
    left.set_joints((150000, 179000, -169000, 99999, -69999, -119999))
    assert wait_for(lambda: robot.observe().joint_position[0] > 2.6)
    obs = robot.observe()
    expected = [150000, 179000, -169000, 99999, -69999, -119999]
    assert np.abs(obs.joint_position[:6] - np.radians(np.array(expected) / 1000)).max() <= QUANTUM
    assert obs.joint_position[6] == pytest.approx(0.020, abs=1e-6)  # 20000 micrometres, in metres
    assert np.abs(obs.joint_position[7:13] - np.radians(np.array(START) / 1000)).max() <= QUANTUM
    assert obs.joint_position[13] == pytest.approx(0.040, abs=1e-6)
    assert obs.fault is None
    assert obs.joint_velocity is not None and obs.joint_velocity.shape == (14,)
    assert obs.frames == {}  # the Piper has no cameras


def test_commands_arrive_as_exact_integers(rig) -> None:
    robot, left, right = rig
    command = np.array([0.5, 1.2345678, -0.75, 0.1, -0.2, 1.9, 0.0351234, -1.0, 0.3, -2.5, -1.7, 1.2, -2.09, 0.07])
    before = len(left.joint_commands), len(right.joint_commands)
    applied = robot.send(result_of(command))

    def millideg(rad: float) -> int:  # written out independently of the backend's units module
        return round(rad * 180000 / math.pi)

    assert wait_for(lambda: len(left.joint_commands) > before[0] and len(right.joint_commands) > before[1])
    assert left.joint_commands[-1] == tuple(millideg(v) for v in command[:6])
    assert right.joint_commands[-1] == tuple(millideg(v) for v in command[7:13])
    assert left.gripper_commands[-1] == (35123, 1000, 0x01, 0)  # micrometres, 1 N*m, enable
    assert right.gripper_commands[-1] == (70000, 1000, 0x01, 0)
    assert left.motion_ctrl_2[-1] == (0x01, 0x01, 100, 0x00)  # CAN control, MOVE J, 100 %, not MIT
    ids = [can_id for can_id, _ in left.received]
    last_joint = len(ids) - 1 - ids[::-1].index(0x155)
    assert ids[last_joint - 1] == 0x151  # MotionCtrl_2 right before JointCtrl
    assert np.abs(applied - command).max() <= 0.5 * QUANTUM + 1e-12
    assert applied[6] == 0.035123


def test_commanded_pose_comes_back_through_feedback_within_one_quantum(rig) -> None:
    robot, left, _right = rig
    command = robot.observe().joint_position.copy()
    command[[0, 3, 7, 12]] += [0.3, -0.2, 0.25, 0.5]
    command[[6, 13]] = [0.05, 0.01]
    robot.send(result_of(command))
    assert wait_for(lambda: np.abs(robot.observe().joint_position - command).max() <= QUANTUM)
    assert left.ctrl_mode == 0x01 and robot.observe().fault is None


def test_commands_from_the_real_safety_filter_reach_the_arms(rig) -> None:
    robot, left, _right = rig
    safety = SafetyFilter.for_embodiment(COBOT)
    obs = robot.observe()
    safety.reset(obs.stamp, obs.joint_position)
    target = obs.joint_position + 0.05
    for tick in range(1, 6):
        result = safety.step(obs.stamp + tick * COBOT.control_period_s, target)
        applied = robot.send(result)
        assert np.abs(applied - result.command).max() <= 0.5 * QUANTUM + 1e-12
    expected = round(result.command[0] * 180000 / math.pi)
    assert wait_for(lambda: bool(left.joint_commands) and left.joint_commands[-1][0] == expected)


def test_joint_commands_are_ignored_until_motion_ctrl_2_selects_can_mode(channels) -> None:
    """The simulator itself: a JointCtrl without MotionCtrl_2 must not move it (as on the real arm)."""
    import struct

    import can

    with VirtualPiperArm(channels[0], joints=START) as arm, can.Bus(channel=channels[0], interface="virtual") as bus:

        def send(can_id: int, data: bytes) -> None:
            bus.send(can.Message(arbitration_id=can_id, data=data.ljust(8, b"\0"), is_extended_id=False))

        def joint_ctrl(values: tuple[int, ...]) -> None:
            for index, can_id in enumerate((0x155, 0x156, 0x157)):
                send(can_id, struct.pack(">ii", *values[2 * index : 2 * index + 2]))

        send(0x471, bytes([7, 0x02]))  # enable all drives; frames are handled in bus order
        joint_ctrl((1000, 20000, -1000, 0, 0, 0))
        assert arm.wait_for(lambda: len(arm.joint_commands) == 1)
        assert arm.joint_targets == START
        send(0x151, bytes([0x01, 0x01, 50, 0x00]))
        joint_ctrl((1000, 20000, -1000, 0, 0, 0))
        assert arm.wait_for(lambda: arm.joint_targets == (1000, 20000, -1000, 0, 0, 0))


@pytest.mark.parametrize("code", [*range(0x01, 0x0E), 0x0E, 0x0F])
def test_each_status_code_reaches_the_observation_as_a_readable_fault(rig, code: int) -> None:
    robot, _left, right = rig
    right.set_arm_status(code)
    assert wait_for(lambda: robot.observe().fault is not None)
    fault = robot.observe().fault
    assert fault.startswith(f"right: arm status 0x{code:02X} (")
    right.set_arm_status(0x00)
    assert wait_for(lambda: robot.observe().fault is None)


def test_error_bits_and_drive_faults_name_arm_and_joint(rig) -> None:
    robot, left, right = rig
    left.set_err_code(1 << 10)
    right.set_drive_bits(4, 1 << 5)
    assert wait_for(lambda: robot.observe().fault == "left: joint 3 angle limit exceeded; right: joint 4 drive error")


def test_stale_feedback_shows_as_an_old_stamp(rig) -> None:
    robot, _left, right = rig
    first = robot.observe().stamp
    assert wait_for(lambda: robot.observe().stamp > first)  # fresh feedback advances the stamp
    right.pause_publishing()

    def settled() -> bool:  # frames already on the bus still arrive: wait until the stamp stops moving
        before = robot.observe().stamp
        time.sleep(0.03)
        return robot.observe().stamp == before

    assert wait_for(settled)
    frozen = robot.observe().stamp
    time.sleep(0.05)
    assert robot.observe().stamp == frozen
    assert robot.now() > frozen
    right.resume_publishing()
    assert wait_for(lambda: robot.observe().stamp > frozen)


# ---- what never reaches the bus --------------------------------------------------------------------------------
def _frames_sent(arm: VirtualPiperArm) -> int:
    return sum(1 for can_id, _ in arm.received if can_id in (0x151, 0x155, 0x156, 0x157, 0x159))


@pytest.mark.parametrize("bad", [np.zeros(14), [0.0] * 14, {"command": np.zeros(14)}, None])
def test_send_refuses_anything_but_a_filter_result(rig, bad) -> None:
    robot, left, right = rig
    before = _frames_sent(left), _frames_sent(right)  # the enable sequence's GripperCtrl frames
    with pytest.raises(TypeError, match="safety-filter results only"):
        robot.send(bad)
    time.sleep(0.02)
    assert (_frames_sent(left), _frames_sent(right)) == before


@pytest.mark.parametrize(("index", "value"), [(0, math.nan), (9, math.inf), (6, math.nan), (13, -math.inf), (3, 1e9)])
def test_nan_and_unencodable_values_never_reach_either_bus(rig, index: int, value: float) -> None:
    robot, left, right = rig
    command = robot.observe().joint_position.copy()
    command[index] = value
    before = _frames_sent(left), _frames_sent(right)
    with pytest.raises(RobotError):
        robot.send(result_of(command))
    time.sleep(0.02)
    assert (_frames_sent(left), _frames_sent(right)) == before


def test_disconnect_leaves_the_arms_enabled_and_holding(channels) -> None:
    with VirtualPiperArm(channels[0], joints=START) as left, VirtualPiperArm(channels[1], joints=START) as right:
        robot = make_robot(channels)
        robot.connect()
        command = robot.observe().joint_position.copy()
        command[0] += 0.1
        robot.send(result_of(command))
        robot.disconnect()
        assert left.wait_for(lambda: left.joints[0] == round(command[0] * 180000 / math.pi))
        assert left.enabled and right.enabled
        assert left.disable_requests == right.disable_requests == 0
        assert left.reset_requests == right.reset_requests == 0
        with pytest.raises(RobotError, match="not connected"):
            robot.send(result_of(command))


# ---- cameras ----------------------------------------------------------------------------------------------------
class StillCameras:
    def __init__(self) -> None:
        self.image = np.zeros((480, 640, 3), dtype=np.uint8)

    def latest(self, name: str) -> CameraFrame | None:
        return None if name == "cam_right_wrist" else CameraFrame(self.image, time.monotonic())


def test_frames_come_only_from_a_camera_source(channels) -> None:
    with VirtualPiperArm(channels[0]), VirtualPiperArm(channels[1]):
        robot = make_robot(channels, cameras=StillCameras())
        robot.connect()
        try:
            assert set(robot.observe().frames) == {"cam_high", "cam_left_wrist"}  # the right one has no frame yet
            assert set(robot.observe(["cam_high"]).frames) == {"cam_high"}
            assert robot.observe(False).frames == {}
            with pytest.raises(RobotError, match="unknown camera"):
                robot.observe(["cam_top"])
        finally:
            robot.disconnect()


def test_without_a_camera_source_named_cameras_are_an_error(rig) -> None:
    robot, _left, _right = rig
    assert robot.observe(True).frames == {}
    with pytest.raises(RobotError, match="the Piper has no cameras and no camera source"):
        robot.observe(["cam_high"])


def test_reconnect_after_disconnect_reads_fresh_feedback(channels) -> None:
    # piper-sdk keeps one interface object per channel name for the life of the process; a second connect
    # must still open the bus again and must not report the previous session's feedback.
    with VirtualPiperArm(channels[0], joints=START) as left, VirtualPiperArm(channels[1], joints=START):
        robot = make_robot(channels)
        robot.connect()
        robot.disconnect()
        left.set_joints((10000, 20000, -30000, 0, 0, 0))
        robot.connect()
        try:
            assert wait_for(lambda: robot.observe().joint_position[0] == pytest.approx(math.radians(10), abs=QUANTUM))
            assert robot.observe().fault is None
        finally:
            robot.disconnect()
