"""PiperRobot: the bimanual CobotMagic (two Piper arms, one CAN bus each) behind RobotInterface.

``connect`` opens both buses, waits for feedback, refuses to start while an arm reports a fault, reads every
drive's firmware limits and refuses implausible ones, and only then enables the arms. Limits are checked before
enabling so that a refusal leaves the arms exactly as they were: this runtime never disables an arm.

``observe`` returns the 14-vector in the embodiment's order and units (rad; gripper in the embodiment's
``gripper_units``), the drives' joint velocities, and the fault of each arm. Its stamp is the reception time, on
the robot's monotonic clock, of the least recent of the frames that make up the state (status, three joint frames,
gripper frame, of both arms): if any of them stops arriving, the stamp stops advancing and the safety filter's
joint-state timeout sees it. The Piper has no cameras; frames come only from a :class:`CameraSource` passed in.

``send`` converts the filtered command to the SDK's integers and returns the command as it went onto the bus
(quantised to 0.001 degree and 1 micrometre). ``disconnect`` closes the buses and leaves both arms enabled and
holding the last command: disabling (or the reset 0x02) cuts the motors and the arm drops under gravity, so
taking an arm out of service is an operator action on the robot, never a side effect of a program ending.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np

from eva_runtime.embodiment import ArmSpec, Embodiment, JointKind
from eva_runtime.robots.interface import CameraFrame, Observation, RobotError, RobotInterface, check_command
from eva_runtime.robots.piper.firmware_limits import FirmwareLimitPolicy, JointLimits, check_arm_limits
from eva_runtime.robots.piper.piper_arm import PiperArm, PiperArmConfig
from eva_runtime.robots.piper.units import GripperScale, millideg_to_rad, rad_to_millideg
from eva_runtime.safety import FilterResult

__all__ = ["CameraSource", "PiperRobot", "PiperRobotConfig"]


@runtime_checkable
class CameraSource(Protocol):
    """Where camera frames come from when the robot itself has none (e.g. a ROS or V4L2 reader).

    ``latest`` returns the newest frame of a camera, stamped on the robot clock (``time.monotonic``), or None
    when that camera has produced nothing yet.
    """

    def latest(self, name: str) -> CameraFrame | None: ...


@dataclass(frozen=True)
class PiperRobotConfig:
    """Bus settings per embodiment arm name, and the firmware-limit policy."""

    arms: Mapping[str, PiperArmConfig]
    limit_policy: FirmwareLimitPolicy = field(default_factory=FirmwareLimitPolicy)
    gripper_full_open_m: float = 0.07  # only used when the embodiment's gripper_units is "normalized"

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", MappingProxyType(dict(self.arms)))
        channels = [arm.channel for arm in self.arms.values()]
        if len(set(channels)) != len(channels):
            raise ValueError(f"each arm needs its own CAN channel, got {channels}")

    @classmethod
    def bimanual(
        cls, left: str = "can_left", right: str = "can_right", interface: str = "socketcan", **arm_settings: object
    ) -> PiperRobotConfig:
        """The CobotMagic layout: follower arms ``left`` and ``right``, each on its own CAN interface."""
        return cls(
            arms={
                "left": PiperArmConfig(channel=left, interface=interface, **arm_settings),
                "right": PiperArmConfig(channel=right, interface=interface, **arm_settings),
            }
        )


def _check_layout(embodiment: Embodiment, config: PiperRobotConfig) -> None:
    names = [arm.name for arm in embodiment.arms]
    if set(names) != set(config.arms):
        raise ValueError(f"Piper config names arms {sorted(config.arms)} but the embodiment has {names}")
    for arm in embodiment.arms:
        kinds = [joint.kind for joint in arm.joints]
        if kinds != [JointKind.REVOLUTE] * 6 + [JointKind.GRIPPER]:
            raise ValueError(f"embodiment arm {arm.name!r} is not a Piper (6 revolute joints + 1 gripper)")


class PiperRobot(RobotInterface):
    def __init__(
        self,
        embodiment: Embodiment,
        config: PiperRobotConfig,
        cameras: CameraSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_layout(embodiment, config)
        self.embodiment = embodiment
        self.config = config
        self._cameras = cameras
        self._clock = clock
        self._gripper = GripperScale(embodiment.gripper_units, config.gripper_full_open_m)
        self._arms: dict[str, PiperArm] = {}
        self.firmware_limits: dict[str, tuple[JointLimits, ...]] = {}

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._arms:
            return
        arms = {
            spec.name: PiperArm(spec.name, self.config.arms[spec.name], self._clock) for spec in self.embodiment.arms
        }
        try:
            for arm in arms.values():
                arm.open()
            for arm in arms.values():
                arm.wait_for_feedback()
            for arm in arms.values():
                fault = arm.feedback().fault
                if fault:
                    raise RobotError(
                        f"{arm.label} reports a fault before start: {fault}. Clear it on the robot; this runtime "
                        "never sends the reset (0x02), which cuts the motors and drops the arm"
                    )
            for spec in self.embodiment.arms:
                self.firmware_limits[spec.name] = self._checked_limits(arms[spec.name], spec)
            for arm in arms.values():
                arm.enable(gripper_hold=arm.feedback().gripper)
        except BaseException:
            for arm in arms.values():
                arm.close()
            self.firmware_limits.clear()
            raise
        self._arms = arms

    def _checked_limits(self, arm: PiperArm, spec: ArmSpec) -> tuple[JointLimits, ...]:
        policy = self.config.limit_policy
        limits = tuple(policy.convert(reading) for reading in arm.read_limits())
        check_arm_limits(spec.name, limits, spec.joints[:6], policy)
        return limits

    def disconnect(self) -> None:
        """Close the buses; the arms stay enabled and hold their last command (see the module docstring)."""
        for arm in self._arms.values():
            arm.close()
        self._arms = {}

    def now(self) -> float:
        return self._clock()

    def _connected_arms(self) -> list[PiperArm]:
        if not self._arms:
            raise RobotError("the Piper robot is not connected")
        return [self._arms[spec.name] for spec in self.embodiment.arms]

    # ---- observing -------------------------------------------------------------------------------------------
    def observe(self, cameras: bool | Sequence[str] = True) -> Observation:
        arms = self._connected_arms()
        frames = self._frames(cameras)
        positions, velocities, stamps, faults = [], [], [], []
        for arm in arms:
            feedback = arm.feedback()
            positions += [millideg_to_rad(value) for value in feedback.joints]
            positions.append(self._gripper.from_micrometres(feedback.gripper))
            if feedback.joint_speeds is None or feedback.gripper_speed is None or velocities is None:
                velocities = None
            else:
                velocities += [speed / 1000.0 for speed in feedback.joint_speeds]
                velocities.append(feedback.gripper_speed * self._gripper.quantum())
            stamps.append(feedback.stamp)
            if feedback.fault:
                faults.append(f"{arm.name}: {feedback.fault}")
        return Observation(
            stamp=min(stamps),
            joint_position=np.array(positions, dtype=np.float64),
            joint_velocity=None if velocities is None else np.array(velocities, dtype=np.float64),
            frames=frames,
            fault="; ".join(faults) or None,
        )

    def _frames(self, cameras: bool | Sequence[str]) -> dict[str, CameraFrame]:
        known = [spec.name for spec in self.embodiment.cameras]
        if cameras is True:
            wanted = known if self._cameras is not None else []  # the arms have no cameras of their own
        elif cameras is False:
            wanted = []
        else:
            wanted = list(cameras)
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise RobotError(f"unknown camera(s) {unknown}; this embodiment has {known}")
        if wanted and self._cameras is None:
            raise RobotError(
                f"camera(s) {wanted} requested but the Piper has no cameras and no camera source was given"
            )
        frames = {}
        for name in wanted:
            frame = self._cameras.latest(name)
            if frame is not None:
                frames[name] = frame
        return frames

    # ---- commanding ------------------------------------------------------------------------------------------
    def send(self, result: FilterResult) -> np.ndarray:
        command = check_command(self.embodiment, result)
        arms = self._connected_arms()
        # Encode both arms before sending anything: a value that cannot be encoded must not leave one arm
        # commanded and the other not.
        encoded = []
        start = 0
        for arm in arms:
            try:
                joints = [rad_to_millideg(float(value)) for value in command[start : start + 6]]
                gripper = self._gripper.to_micrometres(float(command[start + 6]))
            except ValueError as error:
                raise RobotError(f"{arm.label}: cannot encode command: {error}") from error
            encoded.append((arm, joints, gripper))
            start += 7
        applied = []
        for arm, joints, gripper in encoded:
            arm.command(joints, gripper)
            applied += [millideg_to_rad(value) for value in joints]
            applied.append(self._gripper.from_micrometres(gripper))
        return np.array(applied, dtype=np.float64)
