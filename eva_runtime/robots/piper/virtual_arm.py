"""VirtualPiperArm: a simulated Piper arm on a python-can virtual channel, for tests without hardware.

It speaks the documented CAN frames with its own encoder and decoder (``struct`` on the byte layouts in
piper-sdk 0.6.2's message docs, big-endian), never the SDK's parser, so a test that passes through the SDK on one
side and this arm on the other checks the SDK usage against the protocol rather than against itself.

Behaviour: answers EnableArm (0x471) through the enable bit of the drive and gripper status; tracks accepted
joint and gripper targets with a first-order lag; publishes status (0x2A1), joints (0x2A5-0x2A7), gripper (0x2A8)
and drive feedback (0x251-0x256, 0x261-0x266) from a background thread (200 Hz like the real driver); answers the
limit query (0x472 -> 0x473 / 0x47C) with configurable, possibly corrupted, limits. JointCtrl is ignored unless the
last MotionCtrl_2 (0x151) selected CAN control mode, the drives are enabled and the arm status is normal. Tests can
put it into e-stop or any status code, set error bits, stop answering, and stop publishing.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import can

__all__ = ["DEFAULT_LIMITS", "VirtualJointLimits", "VirtualPiperArm"]

# CAN ids (the Piper protocol; written out here rather than imported from the SDK on purpose).
MOTION_CTRL_1, MOTION_CTRL_2 = 0x150, 0x151
JOINT_CTRL = (0x155, 0x156, 0x157)
GRIPPER_CTRL = 0x159
ENABLE = 0x471
LIMIT_QUERY, ANGLE_LIMIT_ANSWER, ACCEL_LIMIT_ANSWER = 0x472, 0x473, 0x47C
STATUS = 0x2A1
JOINT_FEEDBACK = (0x2A5, 0x2A6, 0x2A7)
GRIPPER_FEEDBACK = 0x2A8
HIGH_SPEED = tuple(range(0x251, 0x257))
LOW_SPEED = tuple(range(0x261, 0x267))

ENABLE_BIT = 1 << 6
CAN_CONTROL = 0x01


@dataclass(frozen=True)
class VirtualJointLimits:
    """One drive's limits as the bus carries them: angles in 0.1 degree, speed in 0.001 rad/s, acceleration raw."""

    max_angle: int
    min_angle: int
    max_speed: int = 3000
    max_acceleration: int = 500


# The SDK's limit table in 0.1 degree (J1 +-150, J2 0..180, J3 -170..0, J4 +-100, J5 +-70, J6 +-120).
DEFAULT_LIMITS: tuple[VirtualJointLimits, ...] = (
    VirtualJointLimits(1500, -1500),
    VirtualJointLimits(1800, 0),
    VirtualJointLimits(0, -1700),
    VirtualJointLimits(1000, -1000),
    VirtualJointLimits(700, -700),
    VirtualJointLimits(1200, -1200),
)


@dataclass
class _ArmState:
    joints: list[float]  # 0.001 degree, float so the lag can converge smoothly
    joint_targets: list[int]
    gripper: float  # micrometres
    gripper_target: int
    velocities: list[float] = field(default_factory=lambda: [0.0] * 6)  # 0.001 degree / s
    enabled: list[bool] = field(default_factory=lambda: [False] * 6)
    gripper_enabled: bool = False
    ctrl_mode: int = 0x00
    move_mode: int = 0x01
    arm_status: int = 0x00
    err_code: int = 0
    drive_bits: list[int] = field(default_factory=lambda: [0] * 6)
    gripper_bits: int = 0


class VirtualPiperArm:
    def __init__(
        self,
        channel: str,
        rate_hz: float = 200.0,
        time_constant_s: float = 0.02,
        limits: Sequence[VirtualJointLimits] = DEFAULT_LIMITS,
        joints: Sequence[int] = (0, 0, 0, 0, 0, 0),
        gripper: int = 0,
        answer_enable: bool = True,
        answer_limits: bool = True,
    ) -> None:
        self.channel = channel
        self.period_s = 1.0 / rate_hz
        self.time_constant_s = time_constant_s
        self.limits = tuple(limits)
        self.answer_enable = answer_enable
        self.answer_limits = answer_limits
        self._state = _ArmState(
            joints=[float(j) for j in joints],
            joint_targets=list(joints),
            gripper=float(gripper),
            gripper_target=gripper,
        )
        self._pending_joints = list(joints)
        self._lock = threading.Lock()
        self._publishing = threading.Event()
        self._publishing.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bus: can.BusABC | None = None
        # What the arm received, for tests: (can id, data) of every frame, and the decoded commands.
        self.received: list[tuple[int, bytes]] = []
        self.joint_commands: list[tuple[int, ...]] = []  # one entry per complete 0x155-0x157 triple
        self.gripper_commands: list[tuple[int, int, int, int]] = []  # opening, effort, code, set_zero
        self.motion_ctrl_2: list[tuple[int, int, int, int]] = []  # ctrl mode, move mode, speed %, mit
        self.reset_requests = 0  # MotionCtrl_1 resume (0x02): must stay 0, it drops the arm
        self.disable_requests = 0

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> VirtualPiperArm:
        self._bus = can.Bus(channel=self.channel, interface="virtual", receive_own_messages=False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"virtual-piper-{self.channel}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._bus is not None:
            self._bus.shutdown()
        self._thread = None
        self._bus = None

    def __enter__(self) -> VirtualPiperArm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test controls ---------------------------------------------------------------------------------------
    def set_arm_status(self, code: int) -> None:
        with self._lock:
            self._state.arm_status = code

    def set_err_code(self, code: int) -> None:
        with self._lock:
            self._state.err_code = code

    def set_drive_bits(self, joint: int, bits: int) -> None:
        """Extra status bits (besides enable) for drive ``joint`` (1-based)."""
        with self._lock:
            self._state.drive_bits[joint - 1] = bits

    def set_joints(self, joints: Sequence[int]) -> None:
        """Move the arm instantly (e.g. pushed by hand while disabled); targets follow."""
        with self._lock:
            self._state.joints = [float(j) for j in joints]
            self._state.joint_targets = list(joints)

    def pause_publishing(self) -> None:
        self._publishing.clear()

    def resume_publishing(self) -> None:
        self._publishing.set()

    # ---- inspection ------------------------------------------------------------------------------------------
    @property
    def joints(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(round(j) for j in self._state.joints)

    @property
    def joint_targets(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(self._state.joint_targets)

    @property
    def gripper(self) -> int:
        with self._lock:
            return round(self._state.gripper)

    @property
    def enabled(self) -> bool:
        with self._lock:
            return all(self._state.enabled) and self._state.gripper_enabled

    @property
    def ctrl_mode(self) -> int:
        with self._lock:
            return self._state.ctrl_mode

    def wait_for(self, condition: Callable[[], bool], timeout: float = 2.0) -> bool:
        """Poll ``condition`` until true or ``timeout`` (an upper bound, never an expectation) passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.002)
        return condition()

    # ---- the arm ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_tick:  # publishing first: a stream of commands must not starve the feedback
                self._step(self.period_s)
                if self._publishing.is_set():
                    for can_id, data in self._feedback_frames():
                        self._send(can_id, data)
                next_tick += self.period_s
                if next_tick < now - 10 * self.period_s:  # fell far behind (loaded machine): resync
                    next_tick = now + self.period_s
                continue
            frame = self._bus.recv(timeout=next_tick - now)
            if frame is not None:
                self._handle(frame)

    def _send(self, can_id: int, data: bytes) -> None:
        self._bus.send(can.Message(arbitration_id=can_id, data=data.ljust(8, b"\0"), is_extended_id=False))

    def _handle(self, frame: can.Message) -> None:
        can_id, data = frame.arbitration_id, bytes(frame.data).ljust(8, b"\0")
        answers: list[tuple[int, bytes]] = []
        with self._lock:
            self.received.append((can_id, data))
            state = self._state
            if can_id == ENABLE:
                motor, flag = data[0], data[1]
                motors = range(6) if motor in (7, 0xFF) else [motor - 1] if 1 <= motor <= 6 else []
                if flag == 0x01:
                    self.disable_requests += 1
                if self.answer_enable and flag in (0x01, 0x02):
                    for index in motors:
                        state.enabled[index] = flag == 0x02
            elif can_id == MOTION_CTRL_2:
                self.motion_ctrl_2.append((data[0], data[1], data[2], data[3]))
                state.ctrl_mode, state.move_mode = data[0], data[1]
            elif can_id == MOTION_CTRL_1:
                if data[0] == 0x01:
                    state.arm_status = 0x01
                elif data[0] == 0x02:  # resume: the real arm cuts power to the drives and drops
                    self.reset_requests += 1
                    state.enabled = [False] * 6
            elif can_id in JOINT_CTRL:
                first = 2 * JOINT_CTRL.index(can_id)
                self._pending_joints[first : first + 2] = struct.unpack(">ii", data)
                if can_id == JOINT_CTRL[-1]:
                    self.joint_commands.append(tuple(self._pending_joints))
                    obeys = state.ctrl_mode == CAN_CONTROL and all(state.enabled) and state.arm_status == 0x00
                    if obeys:
                        state.joint_targets = list(self._pending_joints)
            elif can_id == GRIPPER_CTRL:
                opening, effort, code, set_zero = struct.unpack(">iHBB", data)
                self.gripper_commands.append((opening, effort, code, set_zero))
                if self.answer_enable:
                    state.gripper_enabled = code in (0x01, 0x03)
                if state.gripper_enabled and state.arm_status == 0x00:
                    state.gripper_target = opening
            elif can_id == LIMIT_QUERY and self.answer_limits:
                motor, content = data[0], data[1]
                if 1 <= motor <= 6:
                    limit = self.limits[motor - 1]
                    if content == 0x01:
                        payload = struct.pack(">BhhH", motor, limit.max_angle, limit.min_angle, limit.max_speed)
                        answers.append((ANGLE_LIMIT_ANSWER, payload))
                    elif content == 0x02:
                        answers.append((ACCEL_LIMIT_ANSWER, struct.pack(">BH", motor, limit.max_acceleration)))
        for can_id, payload in answers:
            self._send(can_id, payload)

    def _step(self, dt: float) -> None:
        alpha = 1.0 - math.exp(-dt / self.time_constant_s)
        with self._lock:
            state = self._state
            for index, target in enumerate(state.joint_targets):
                before = state.joints[index]
                after = before + (target - before) * alpha
                if abs(target - after) < 0.5:  # settled within half a quantum: report the target exactly
                    after = float(target)
                state.joints[index] = after
                state.velocities[index] = (after - before) / dt
            gripper = state.gripper + (state.gripper_target - state.gripper) * alpha
            state.gripper = float(state.gripper_target) if abs(state.gripper_target - gripper) < 0.5 else gripper

    def _feedback_frames(self) -> list[tuple[int, bytes]]:
        with self._lock:
            state = self._state
            moving = any(round(j) != t for j, t in zip(state.joints, state.joint_targets, strict=True))
            frames = [
                (
                    STATUS,
                    struct.pack(
                        ">BBBBBBH",
                        state.ctrl_mode,
                        state.arm_status,
                        state.move_mode,
                        0,
                        int(moving),
                        0,
                        state.err_code,
                    ),
                ),
            ]
            joints = [round(j) for j in state.joints]
            for index, can_id in enumerate(JOINT_FEEDBACK):
                frames.append((can_id, struct.pack(">ii", joints[2 * index], joints[2 * index + 1])))
            gripper_status = state.gripper_bits | (ENABLE_BIT if state.gripper_enabled else 0)
            frames.append((GRIPPER_FEEDBACK, struct.pack(">ihBB", round(state.gripper), 0, gripper_status, 0)))
            for index, can_id in enumerate(HIGH_SPEED):
                # 0.001 degree/s -> 0.001 rad/s, clamped to the int16 field
                speed = round(math.radians(state.velocities[index]))
                frames.append((can_id, struct.pack(">hHi", max(-32768, min(32767, speed)), 0, 0)))
            for index, can_id in enumerate(LOW_SPEED):
                status = state.drive_bits[index] | (ENABLE_BIT if state.enabled[index] else 0)
                frames.append((can_id, struct.pack(">HhbBH", 240, 30, 30, status, 0)))
            return frames
