"""Piper status codes: turn the arm status frame (0x2A1), the drive status bytes (0x261-0x266) and the gripper
status byte (0x2A8) into one readable fault string for :attr:`Observation.fault` (None when healthy).

Code tables follow piper-sdk 0.6.2's message documentation (docs/references.md §1). Every non-zero arm status is a
fault here, including the teach states 0x0B-0x0D: an arm in teach mode does not obey CAN joint commands, which
for this runtime is as bad as an error. Unknown codes are reported with their number, never ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ARM_STATUS_NAMES",
    "CTRL_MODE_CAN",
    "CTRL_MODE_NAMES",
    "ArmStatusFrame",
    "describe_arm_status",
    "describe_drive_status",
    "describe_error_bits",
    "describe_gripper_status",
    "describe_status",
]

ARM_STATUS_NAMES: dict[int, str] = {
    0x00: "normal",
    0x01: "emergency stop",
    0x02: "no solution",
    0x03: "singularity",
    0x04: "target exceeds joint limit",
    0x05: "joint communication error",
    0x06: "joint brake not released",
    0x07: "collision",
    0x08: "overspeed during teach drag",
    0x09: "joint status abnormal",
    0x0A: "other error",
    0x0B: "teach recording",
    0x0C: "teach playback",
    0x0D: "teach paused",
    0x0E: "main controller over-temperature (NTC)",
    0x0F: "discharge resistor over-temperature (NTC)",
}

CTRL_MODE_CAN = 0x01
CTRL_MODE_NAMES: dict[int, str] = {
    0x00: "standby",
    0x01: "CAN control",
    0x02: "teach",
    0x03: "Ethernet control",
    0x04: "Wi-Fi control",
    0x07: "offline trajectory",
}

# err_code is a big-endian uint16 from bytes 6-7: byte 6 (high byte, bits 8-13) flags joints over their angle
# limit, byte 7 (low byte, bits 0-5) flags joints whose communication failed.
_ANGLE_LIMIT_SHIFT = 8
_COMMUNICATION_SHIFT = 0

# Drive status byte (0x261-0x266 byte 5). Bit 6 is "enabled", so it is a fault when it is *clear*.
_DRIVE_BITS = {
    0: "supply voltage low",
    1: "motor over-temperature",
    2: "drive over-current",
    3: "drive over-temperature",
    4: "collision protection triggered",
    5: "drive error",
    7: "stall protection triggered",
}
_GRIPPER_BITS = {
    0: "supply voltage low",
    1: "motor over-temperature",
    2: "drive over-current",
    3: "drive over-temperature",
    4: "sensor abnormal",
    5: "drive error",
}
ENABLE_BIT = 6


@dataclass(frozen=True)
class ArmStatusFrame:
    """The fields of one 0x2A1 frame this runtime uses."""

    ctrl_mode: int
    arm_status: int
    mode_feed: int
    err_code: int


def describe_arm_status(code: int) -> str | None:
    if code == 0x00:
        return None
    name = ARM_STATUS_NAMES.get(code, "unknown arm status")
    return f"arm status 0x{code:02X} ({name})"


def describe_error_bits(err_code: int) -> list[str]:
    problems = []
    for joint in range(6):
        if err_code & (1 << (_ANGLE_LIMIT_SHIFT + joint)):
            problems.append(f"joint {joint + 1} angle limit exceeded")
    for joint in range(6):
        if err_code & (1 << (_COMMUNICATION_SHIFT + joint)):
            problems.append(f"joint {joint + 1} communication error")
    return problems


def describe_drive_status(joint: int, status: int, expect_enabled: bool) -> list[str]:
    """``joint`` is 1-based. A drive that should be enabled but reports disabled has dropped out."""
    problems = [f"joint {joint} {text}" for bit, text in _DRIVE_BITS.items() if status & (1 << bit)]
    if expect_enabled and not status & (1 << ENABLE_BIT):
        problems.append(f"joint {joint} drive disabled")
    return problems


def describe_gripper_status(status: int, expect_enabled: bool) -> list[str]:
    problems = [f"gripper {text}" for bit, text in _GRIPPER_BITS.items() if status & (1 << bit)]
    if expect_enabled and not status & (1 << ENABLE_BIT):
        problems.append("gripper drive disabled")
    return problems


def describe_status(
    status: ArmStatusFrame,
    drive_status: Sequence[int | None] = (),
    gripper_status: int | None = None,
    expect_enabled: bool = False,
    expect_can_mode: bool = False,
) -> str | None:
    """One fault string for one arm, or None when nothing is wrong. Drive entries that never arrived are None."""
    problems = []
    arm = describe_arm_status(status.arm_status)
    if arm:
        problems.append(arm)
    problems += describe_error_bits(status.err_code)
    if expect_can_mode and status.ctrl_mode != CTRL_MODE_CAN:
        mode = CTRL_MODE_NAMES.get(status.ctrl_mode, "unknown mode")
        problems.append(f"not in CAN control mode (ctrl_mode 0x{status.ctrl_mode:02X} {mode})")
    for joint, code in enumerate(drive_status, start=1):
        if code is not None:
            problems += describe_drive_status(joint, code, expect_enabled)
    if gripper_status is not None:
        problems += describe_gripper_status(gripper_status, expect_enabled)
    return "; ".join(problems) or None
