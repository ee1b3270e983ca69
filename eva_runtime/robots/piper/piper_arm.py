"""PiperArm: one Piper arm on one CAN bus through piper-sdk (open, feedback, limit query, enable, joint commands).

How the SDK is used. piper-sdk 0.6.2 can open any python-can interface through its public API:
``C_PiperInterface_V2(can_auto_init=False)`` then ``CreateCanBus(channel, bustype=...)`` (``socketcan`` on the
robot, ``virtual`` in tests) and ``ConnectPort(start_thread=False)``. All frames are encoded by the SDK's command
methods (``EnableArm``, ``MotionCtrl_2``, ``JointCtrl``, ``GripperCtrl``, ``SearchMotorMaxAngleSpdAccLimit``) and
decoded by its ``ParseCANFrame``. The one seam we own is the receive loop: this class reads the SDK's receive bus
itself and hands every frame to ``ParseCANFrame``, instead of starting the SDK's reader threads, because

* the SDK stamps feedback with the frame's wall-clock time; the runtime needs a monotonic stamp taken when the
  frame arrived, so stale feedback shows as an old stamp on the robot clock;
* ``GetAllMotorAngleLimitMaxSpd()`` / ``GetAllMotorMaxAccLimit()`` store a reference to the parser's one reused
  message object for every drive, so all six drives read back the last answer (checked on 0.6.2): the limits
  are taken from the per-frame accessors right after each frame is parsed instead;
* ``DisconnectPort`` cannot stop the SDK's monitor thread (it only sets the reader's stop event and joins a
  misspelled attribute), which would leak a thread per connect.

The state each frame carries is copied out of the SDK inside the receive loop, under this class's lock, so a
reader never sees a half-updated SDK object (the frame ids and that copy: :mod:`.arm_feedback`). Sending happens on
the caller's thread.

Safety rules: this class never sends the reset / resume command (0x02 drops the arm) and never disables the
arm; :meth:`close` leaves it enabled and holding its last command.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eva_runtime.robots.interface import RobotError
from eva_runtime.robots.piper.arm_feedback import GRIPPER_ID, LOW_SPEED_IDS, STATE_IDS, FeedbackFrames
from eva_runtime.robots.piper.firmware_limits import JointLimitReading
from eva_runtime.robots.piper.status import ENABLE_BIT, describe_status
from eva_runtime.robots.piper.units import newton_metres_to_milli_newton_metres

if TYPE_CHECKING:
    from piper_sdk import C_PiperInterface_V2

__all__ = ["ArmFeedback", "PiperArm", "PiperArmConfig", "PiperTimeoutError"]

log = logging.getLogger(__name__)

CTRL_MODE_CAN = 0x01
MOVE_J = 0x01
POSITION_VELOCITY_MODE = 0x00  # not MIT
ALL_MOTORS = 7
GRIPPER_ENABLE = 0x01
QUERY_ANGLE_SPEED = 0x01
QUERY_ACCELERATION = 0x02

_OPEN_CHANNELS: set[str] = set()
_OPEN_LOCK = threading.Lock()


class PiperTimeoutError(RobotError):
    """The arm did not answer in time (no feedback, enable not confirmed, limit query unanswered)."""


@dataclass(frozen=True)
class PiperArmConfig:
    """One arm's bus and command settings. ``interface`` is any python-can interface name."""

    channel: str = "can0"
    interface: str = "socketcan"
    bitrate: int = 1_000_000
    # Firmware speed percentage for MOVE J. The safety filter is the speed limiter: a lower percentage makes the
    # arm lag the filtered command and trips the tracking-error check.
    speed_percent: int = 100
    gripper_effort: float = 1.0  # N*m; the vendor's SDK demos send 1000 x 0.001 N*m
    feedback_timeout_s: float = 2.0
    enable_timeout_s: float = 3.0
    limit_query_timeout_s: float = 2.0
    retry_interval_s: float = 0.1
    # The SDK's port check (interface exists, is up, bitrate matches) reads /sys and `ip`: only meaningful for
    # socketcan. None = check exactly when the interface is socketcan.
    check_port: bool | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.speed_percent <= 100:
            raise ValueError(f"speed_percent must be in [0, 100], got {self.speed_percent}")
        if not 0.0 <= self.gripper_effort <= 5.0:
            raise ValueError(f"gripper_effort must be in [0, 5] N*m, got {self.gripper_effort}")
        for name in ("feedback_timeout_s", "enable_timeout_s", "limit_query_timeout_s", "retry_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class ArmFeedback:
    """The newest feedback of one arm, in bus units. Stamps are on the arm's clock at frame reception."""

    stamp: float  # oldest reception time among the status, joint and gripper frames
    joints: tuple[int, ...]  # 0.001 degree, joints 1-6
    gripper: int  # micrometres
    gripper_effort: int  # 0.001 N*m
    joint_speeds: tuple[int, ...] | None  # 0.001 rad/s from the drives; None until all six have reported
    gripper_speed: float | None  # micrometres/s, finite difference of the last two gripper frames
    fault: str | None


class PiperArm:
    def __init__(self, name: str, config: PiperArmConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._effort = newton_metres_to_milli_newton_metres(config.gripper_effort)
        self._sdk: C_PiperInterface_V2 | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._reset_feedback()

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def _reset_feedback(self) -> None:
        self._frames = FeedbackFrames()
        self._reader_error: str | None = None
        self._enabled = False
        self._commanded = False

    @property
    def label(self) -> str:
        return f"{self.name} arm ({self.config.interface}:{self.config.channel})"

    def open(self) -> None:
        """Open the bus through the SDK and start receiving. Sends nothing."""
        if self._sdk is not None:
            return
        from piper_sdk import C_PiperInterface_V2  # lazy: the core never imports the SDK

        channel = self.config.channel
        with _OPEN_LOCK:
            if channel in _OPEN_CHANNELS:  # the SDK keeps one interface object per channel name in the process
                raise RobotError(f"{self.label}: channel {channel!r} is already open in this process")
            _OPEN_CHANNELS.add(channel)
        check = self.config.check_port if self.config.check_port is not None else self.config.interface == "socketcan"
        sdk = None
        try:
            with warnings.catch_warnings():
                # piper-sdk 0.6.2 opens the bus with python-can's deprecated `bustype` keyword.
                warnings.filterwarnings("ignore", message=".*bustype.*", category=DeprecationWarning)
                sdk = C_PiperInterface_V2(can_name=channel, judge_flag=False, can_auto_init=False)
                sdk.CreateCanBus(
                    channel, bustype=self.config.interface, expected_bitrate=self.config.bitrate, judge_flag=check
                )
            sdk.ConnectPort(can_init=False, piper_init=False, start_thread=False)
            bus = sdk.GetCanBus()
            if bus is None or bus.recv_bus is None or bus.send_bus is None:
                raise RobotError("python-can could not open the bus")
        except Exception as error:
            bus = sdk.GetCanBus() if sdk is not None else None
            if bus is not None:
                bus.Close()  # a half-opened bus would keep the channel's socket open
            with _OPEN_LOCK:
                _OPEN_CHANNELS.discard(channel)
            hint = f" (on the robot: sudo ip link set {channel} up type can bitrate {self.config.bitrate})"
            raise RobotError(f"{self.label}: cannot open the CAN bus: {error}{hint}") from error
        self._reset_feedback()
        self._stop.clear()
        self._sdk = sdk
        self._reader = threading.Thread(
            target=self._receive, args=(bus.recv_bus,), daemon=True, name=f"piper-{self.name}-rx"
        )
        self._reader.start()

    def close(self) -> None:
        """Stop receiving and close the bus. The arm stays enabled and holds its last command (see module doc)."""
        if self._sdk is None:
            return
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        self._sdk.DisconnectPort()
        self._sdk = None
        self._reader = None
        with _OPEN_LOCK:
            _OPEN_CHANNELS.discard(self.config.channel)

    @property
    def sdk(self) -> C_PiperInterface_V2:
        if self._sdk is None:
            raise RobotError(f"{self.label}: not open")
        return self._sdk

    # ---- receiving -------------------------------------------------------------------------------------------
    def _receive(self, bus) -> None:
        while not self._stop.is_set():
            try:
                frame = bus.recv(timeout=0.05)
            except Exception as error:  # a closed or failed bus: report it through fault(), stop reading
                with self._cond:
                    self._reader_error = f"CAN receive failed: {error}"
                    self._cond.notify_all()
                return
            if frame is None or frame.is_error_frame:
                continue
            stamp = self._clock()
            try:
                self._sdk.ParseCANFrame(frame)
                with self._cond:
                    self._frames.store(self._sdk, frame, stamp)
                    self._cond.notify_all()
            except Exception:  # one malformed frame must not stop the feedback of a moving arm
                log.exception("%s: could not parse frame 0x%X", self.label, frame.arbitration_id)

    def _wait_until(self, ready: Callable[[], bool], timeout: float, resend: Callable[[], None] | None = None) -> bool:
        """Wait (upper bound ``timeout``) until ``ready()`` holds under the lock; call ``resend`` periodically."""
        deadline = time.monotonic() + timeout
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if resend is not None and now >= next_send:
                resend()
                next_send = now + self.config.retry_interval_s
            with self._cond:
                if ready():
                    return True
                if self._reader_error is not None:
                    raise RobotError(f"{self.label}: {self._reader_error}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                wait = min(remaining, next_send - now) if resend is not None else remaining
                self._cond.wait(max(wait, 0.001))

    def _have_state(self) -> bool:
        return self._frames.have_state()

    def wait_for_feedback(self) -> None:
        timeout = self.config.feedback_timeout_s
        if not self._wait_until(self._have_state, timeout):
            missing = [f"0x{i:03X}" for i in STATE_IDS if i not in self._frames.stamps]
            raise PiperTimeoutError(
                f"{self.label}: no feedback within {timeout:g} s (missing frames {', '.join(missing)}): is the arm "
                f"powered, on this channel, and the bus at {self.config.bitrate} bit/s?"
            )

    def feedback(self) -> ArmFeedback:
        with self._cond:
            if not self._have_state():
                raise RobotError(f"{self.label}: no complete feedback received yet")
            frames = self._frames
            speeds = None if None in frames.speeds else tuple(frames.speeds)
            opening, effort, gripper_status = frames.gripper
            return ArmFeedback(
                stamp=min(frames.stamps[i] for i in STATE_IDS),
                joints=tuple(frames.joints),
                gripper=opening,
                gripper_effort=effort,
                joint_speeds=speeds,
                gripper_speed=frames.gripper_speed,
                fault=self._fault(gripper_status),
            )

    def _fault(self, gripper_status: int) -> str | None:
        problems = []
        if self._reader_error is not None:
            problems.append(self._reader_error)
        frames = self._frames
        described = describe_status(
            frames.status, frames.drive_status, gripper_status, self._enabled, expect_can_mode=self._commanded
        )
        if described:
            problems.append(described)
        return "; ".join(problems) or None

    # ---- start-up --------------------------------------------------------------------------------------------
    def read_limits(self) -> list[JointLimitReading]:
        """Ask every drive for its angle / speed / acceleration limits; wait for all twelve answers."""
        with self._cond:
            self._frames.angle_limits.clear()
            self._frames.acceleration_limits.clear()

        frames = self._frames

        def complete() -> bool:
            return all(j in frames.angle_limits and j in frames.acceleration_limits for j in range(1, 7))

        def ask_missing() -> None:
            with self._cond:
                missing_angles = [j for j in range(1, 7) if j not in frames.angle_limits]
                missing_accelerations = [j for j in range(1, 7) if j not in frames.acceleration_limits]
            with self._send_lock:
                for joint in missing_angles:
                    self.sdk.SearchMotorMaxAngleSpdAccLimit(joint, QUERY_ANGLE_SPEED)
                for joint in missing_accelerations:
                    self.sdk.SearchMotorMaxAngleSpdAccLimit(joint, QUERY_ACCELERATION)

        timeout = self.config.limit_query_timeout_s
        if not self._wait_until(complete, timeout, ask_missing):
            with self._cond:
                missing = sorted(
                    {j for j in range(1, 7) if j not in frames.angle_limits}
                    | {j for j in range(1, 7) if j not in frames.acceleration_limits}
                )
            raise PiperTimeoutError(
                f"{self.label}: drives {missing} did not answer the limit query (0x472) within {timeout:g} s"
            )
        with self._cond:
            return [
                JointLimitReading(
                    joint=j,
                    max_angle=frames.angle_limits[j][0],
                    min_angle=frames.angle_limits[j][1],
                    max_speed=frames.angle_limits[j][2],
                    max_acceleration=frames.acceleration_limits[j],
                )
                for j in range(1, 7)
            ]

    def enable(self, gripper_hold: int) -> None:
        """Enable the six joint drives and the gripper; verify it from the drive status feedback, re-sending the
        enable while waiting, as the vendor's enable loop does.

        The gripper is enabled with a target of ``gripper_hold`` (its measured opening), not the 0 of the vendor
        demos, which would close it on whatever it holds.
        """
        asked = self._clock()

        def enabled() -> bool:
            frames = self._frames
            fresh = all(frames.stamps.get(i, -1.0) >= asked for i in (*LOW_SPEED_IDS, GRIPPER_ID))
            drives = all(code is not None and code & (1 << ENABLE_BIT) for code in frames.drive_status)
            return fresh and drives and frames.gripper is not None and bool(frames.gripper[2] & (1 << ENABLE_BIT))

        def send_enable() -> None:
            with self._send_lock:
                self.sdk.EnableArm(ALL_MOTORS)
                self.sdk.GripperCtrl(gripper_hold, self._effort, GRIPPER_ENABLE, 0)

        timeout = self.config.enable_timeout_s
        if not self._wait_until(enabled, timeout, send_enable):
            with self._cond:
                frames = self._frames
                silent = [f"0x{i:03X}" for i in (*LOW_SPEED_IDS, GRIPPER_ID) if frames.stamps.get(i, -1.0) < asked]
                disabled = [
                    str(j + 1)
                    for j, code in enumerate(frames.drive_status)
                    if code is not None and not code & (1 << ENABLE_BIT)
                ]
                if frames.gripper is not None and not frames.gripper[2] & (1 << ENABLE_BIT):
                    disabled.append("gripper")
            detail = []
            if silent:
                detail.append(f"no drive status frames {', '.join(silent)} since the enable command")
            if disabled:
                detail.append(f"drives {', '.join(disabled)} still report disabled")
            raise PiperTimeoutError(
                f"{self.label}: enable not confirmed within {timeout:g} s ({'; '.join(detail) or 'no answer'})"
            )
        with self._cond:
            self._enabled = True

    # ---- commanding ------------------------------------------------------------------------------------------
    def command(self, joints: Sequence[int], gripper: int) -> None:
        """Send one joint target (0.001 degree) and gripper target (micrometres).

        MotionCtrl_2 (CAN control, MOVE J) goes before every JointCtrl, as in the vendor's joint-control demo: the
        arm ignores JointCtrl outside CAN control mode, and re-asserting the mode costs one frame per tick.
        """
        if len(joints) != 6 or not all(isinstance(value, int) for value in (*joints, gripper)):
            raise RobotError(f"{self.label}: a command is six joint integers and one gripper integer")
        sdk = self.sdk
        with self._send_lock:
            sdk.MotionCtrl_2(CTRL_MODE_CAN, MOVE_J, self.config.speed_percent, POSITION_VELOCITY_MODE)
            sdk.JointCtrl(*joints)
            sdk.GripperCtrl(gripper, self._effort, GRIPPER_ENABLE, 0)
        with self._cond:
            self._commanded = True
