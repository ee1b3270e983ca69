"""The Piper arm's feedback frames: their CAN ids, and the state each one carries, copied out of piper-sdk.

:class:`~eva_runtime.robots.piper.piper_arm.PiperArm` parses each received frame with the SDK's ``ParseCANFrame``
and then hands it to :meth:`FeedbackFrames.store` under its lock, so a reader never sees a half-updated SDK object
(the module doc of :mod:`.piper_arm` says why the receive loop is ours, not the SDK's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eva_runtime.robots.piper.status import ArmStatusFrame

if TYPE_CHECKING:
    import can
    from piper_sdk import C_PiperInterface_V2

__all__ = [
    "ACCELERATION_LIMIT_ID",
    "ANGLE_LIMIT_ID",
    "GRIPPER_ID",
    "HIGH_SPEED_IDS",
    "JOINT_IDS",
    "LOW_SPEED_IDS",
    "STATE_IDS",
    "STATUS_ID",
    "FeedbackFrames",
]

# CAN ids of the feedback frames (piper-sdk CanIDPiper); the arm publishes them at 200 Hz.
STATUS_ID = 0x2A1
JOINT_IDS = (0x2A5, 0x2A6, 0x2A7)  # joints 1-2, 3-4, 5-6
GRIPPER_ID = 0x2A8
HIGH_SPEED_IDS = tuple(range(0x251, 0x257))  # drives 1-6: speed, current, position
LOW_SPEED_IDS = tuple(range(0x261, 0x267))  # drives 1-6: voltage, temperatures, status byte
ANGLE_LIMIT_ID = 0x473
ACCELERATION_LIMIT_ID = 0x47C
# The frames whose content makes up an observation: their oldest reception time is the observation's stamp.
STATE_IDS = (STATUS_ID, *JOINT_IDS, GRIPPER_ID)


class FeedbackFrames:
    """What the arm's feedback frames said so far, in bus units, with each frame id's latest reception stamp.

    Not thread-safe by itself: the arm reads and writes it under its lock.
    """

    def __init__(self) -> None:
        self.stamps: dict[int, float] = {}
        self.status: ArmStatusFrame | None = None
        self.joints: list[int | None] = [None] * 6
        self.gripper: tuple[int, int, int] | None = None  # opening, effort, status
        self.gripper_speed: float | None = None
        self.speeds: list[int | None] = [None] * 6
        self.drive_status: list[int | None] = [None] * 6
        self.angle_limits: dict[int, tuple[int, int, int]] = {}  # drive -> max, min (0.1 deg), speed (mrad/s)
        self.acceleration_limits: dict[int, int] = {}

    def have_state(self) -> bool:
        """Whether every frame an observation is made of has arrived at least once."""
        return all(can_id in self.stamps for can_id in STATE_IDS)

    def store(self, sdk: C_PiperInterface_V2, frame: can.Message, stamp: float) -> None:
        """Copy the state ``frame`` carried out of ``sdk``, right after ``sdk.ParseCANFrame(frame)``; ``stamp`` is
        when it arrived (on the arm's clock)."""
        can_id = frame.arbitration_id
        if can_id == STATUS_ID:
            status = sdk.GetArmStatus().arm_status
            self.status = ArmStatusFrame(status.ctrl_mode, status.arm_status, status.mode_feed, status.err_code)
        elif can_id in JOINT_IDS:
            feedback = sdk.GetArmJointMsgs()
            if feedback.time_stamp != frame.timestamp:  # the SDK dropped it as abnormal (|angle| > 300 degree)
                return
            first = 2 * JOINT_IDS.index(can_id)
            state = feedback.joint_state
            values = (state.joint_1, state.joint_2, state.joint_3, state.joint_4, state.joint_5, state.joint_6)
            self.joints[first : first + 2] = values[first : first + 2]
        elif can_id == GRIPPER_ID:
            feedback = sdk.GetArmGripperMsgs()
            if feedback.time_stamp != frame.timestamp:  # dropped as abnormal (> 150 mm)
                return
            state = feedback.gripper_state
            previous, previous_stamp = self.gripper, self.stamps.get(GRIPPER_ID)
            if previous is not None and previous_stamp is not None and stamp > previous_stamp:
                self.gripper_speed = (state.grippers_angle - previous[0]) / (stamp - previous_stamp)
            self.gripper = (state.grippers_angle, state.grippers_effort, state.status_code)
        elif can_id in HIGH_SPEED_IDS:
            index = HIGH_SPEED_IDS.index(can_id)
            self.speeds[index] = getattr(sdk.GetArmHighSpdInfoMsgs(), f"motor_{index + 1}").motor_speed
        elif can_id in LOW_SPEED_IDS:
            index = LOW_SPEED_IDS.index(can_id)
            self.drive_status[index] = getattr(sdk.GetArmLowSpdInfoMsgs(), f"motor_{index + 1}").foc_status_code
        elif can_id == ANGLE_LIMIT_ID:
            answer = sdk.GetCurrentMotorAngleLimitMaxVel().current_motor_angle_limit_max_vel
            self.angle_limits[answer.motor_num] = (
                answer.max_angle_limit,
                answer.min_angle_limit,
                answer.max_joint_spd,
            )
        elif can_id == ACCELERATION_LIMIT_ID:
            answer = sdk.GetCurrentMotorMaxAccLimit().current_motor_max_acc_limit
            self.acceleration_limits[answer.joint_motor_num] = answer.max_joint_acc
        else:
            return  # our own commands echoed by the bus, other frames: no state of ours
        self.stamps[can_id] = stamp
