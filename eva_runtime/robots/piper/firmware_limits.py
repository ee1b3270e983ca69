"""Firmware joint limits: convert what an arm reports at start-up (0x473, 0x47C) and refuse implausible values.

The Piper stores per-joint angle limits, a speed cap and an acceleration cap in its drives, and one user found them
read back corrupted. The runtime reads them at every connect and refuses to run unless each joint's limits are
finite, ordered, no wider than the SDK's own limit table, wide enough for the embodiment's range, and have rate
caps inside the firmware-settable range and not below what the embodiment's safety filter will command (a slower
firmware makes the arm lag the filtered command until the tracking check faults). Every bound is a field of
:class:`FirmwareLimitPolicy`, so a different arm or firmware is a configuration change, not a code change.

Units on the bus: angles 0.1 degree (int16), speed 0.001 rad/s (uint16), acceleration uint16 whose unit the SDK
documents twice differently (0.001 rad/s^2 on the 0x47C feedback, 0.01 rad/s^2 on the 0x475 setter whose
default 500 means 5 rad/s^2). The default here is 0.01, so a value written with the SDK setter reads back as the
same number; it is the ``acceleration_unit`` entry of the policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from eva_runtime.embodiment import JointSpec
from eva_runtime.robots.interface import RobotError
from eva_runtime.robots.piper.units import deci_degrees_to_rad, milli_per_second_to_rad_s

__all__ = [
    "SDK_POSITION_TABLE",
    "FirmwareLimitError",
    "FirmwareLimitPolicy",
    "JointLimitReading",
    "JointLimits",
    "check_arm_limits",
]

# piper-sdk JointCtrl limit table (docs/references.md §1), J1..J6 in rad.
SDK_POSITION_TABLE: tuple[tuple[float, float], ...] = (
    (-2.6179, 2.6179),
    (0.0, 3.14),
    (-2.967, 0.0),
    (-1.745, 1.745),
    (-1.22, 1.22),
    (-2.0944, 2.0944),
)


class FirmwareLimitError(RobotError):
    """The limits an arm reports are implausible; the message names every joint, value and allowed range."""


@dataclass(frozen=True)
class JointLimitReading:
    """One joint's limits as the bus carries them (0x473 + 0x47C), before any conversion."""

    joint: int  # 1..6, the drive number
    max_angle: int  # 0.1 degree
    min_angle: int  # 0.1 degree
    max_speed: int  # 0.001 rad/s
    max_acceleration: int  # FirmwareLimitPolicy.acceleration_unit rad/s^2


@dataclass(frozen=True)
class JointLimits:
    joint: int
    position_min: float  # rad
    position_max: float  # rad
    velocity_max: float  # rad/s
    acceleration_max: float  # rad/s^2


@dataclass(frozen=True)
class FirmwareLimitPolicy:
    position_table: tuple[tuple[float, float], ...] = SDK_POSITION_TABLE
    velocity_cap: float = 3.0  # firmware-settable joint speed range is 0-3.0 rad/s
    acceleration_cap: float = 5.0  # firmware-settable joint acceleration range is 0-5.0 rad/s^2
    # The firmware stores angles in 0.1 degree: the table's 2.0944 rad is 120.0002 degree, which the firmware can
    # only hold as 120.0. Comparisons allow one such quantum either way.
    position_tolerance: float = math.pi / 1800.0
    acceleration_unit: float = 0.01  # rad/s^2 per count on 0x47C (see the module docstring)

    def convert(self, reading: JointLimitReading) -> JointLimits:
        return JointLimits(
            joint=reading.joint,
            position_min=deci_degrees_to_rad(reading.min_angle),
            position_max=deci_degrees_to_rad(reading.max_angle),
            velocity_max=milli_per_second_to_rad_s(reading.max_speed),
            acceleration_max=reading.max_acceleration * self.acceleration_unit,
        )


def _joint_problems(limits: JointLimits, needed: JointSpec, policy: FirmwareLimitPolicy, where: str) -> list[str]:
    low, high = limits.position_min, limits.position_max
    values = {
        "position min": low,
        "position max": high,
        "velocity max": limits.velocity_max,
        "acceleration max": limits.acceleration_max,
    }
    bad = [
        f"{where}: {name} is {value!r}, not a finite number (allowed: finite)"
        for name, value in values.items()
        if not math.isfinite(value)
    ]
    if bad:
        return bad
    problems = []
    tol = policy.position_tolerance
    table_low, table_high = policy.position_table[limits.joint - 1]
    need_low, need_high = needed.position
    if not low < high:
        problems.append(f"{where}: position min {low:.4f} rad is not below max {high:.4f} rad (allowed: min < max)")
    else:
        if low < table_low - tol or high > table_high + tol:
            problems.append(
                f"{where}: position range [{low:.4f}, {high:.4f}] rad is wider than the SDK table "
                f"[{table_low:.4f}, {table_high:.4f}] rad (allowed: within it, +-{tol:.4f} rad)"
            )
        if need_low < low - tol or need_high > high + tol:
            problems.append(
                f"{where}: position range [{low:.4f}, {high:.4f}] rad does not cover the embodiment's "
                f"[{need_low:.4f}, {need_high:.4f}] rad for {needed.name} (allowed: covering it, +-{tol:.4f} rad)"
            )
    speed, speed_quantum = limits.velocity_max, 0.001
    if not 0.0 < speed <= policy.velocity_cap:
        problems.append(
            f"{where}: velocity max {speed:.3f} rad/s is out of range (allowed: (0, {policy.velocity_cap:g}] rad/s)"
        )
    elif speed < needed.velocity_max - speed_quantum:
        problems.append(
            f"{where}: velocity max {speed:.3f} rad/s is below the embodiment's velocity_max "
            f"{needed.velocity_max:g} rad/s for {needed.name} (allowed: [{needed.velocity_max:g}, "
            f"{policy.velocity_cap:g}] rad/s)"
        )
    accel, accel_quantum = limits.acceleration_max, policy.acceleration_unit
    if not 0.0 < accel <= policy.acceleration_cap:
        problems.append(
            f"{where}: acceleration max {accel:.3f} rad/s^2 (read as {accel_quantum:g} rad/s^2 per count) is out of "
            f"range (allowed: (0, {policy.acceleration_cap:g}] rad/s^2)"
        )
    elif accel < needed.acceleration_max - accel_quantum:
        problems.append(
            f"{where}: acceleration max {accel:.3f} rad/s^2 is below the embodiment's acceleration_max "
            f"{needed.acceleration_max:g} rad/s^2 for {needed.name} (allowed: [{needed.acceleration_max:g}, "
            f"{policy.acceleration_cap:g}] rad/s^2)"
        )
    return problems


def check_arm_limits(
    arm: str, limits: Sequence[JointLimits], needed: Sequence[JointSpec], policy: FirmwareLimitPolicy
) -> None:
    """Raise :class:`FirmwareLimitError` listing every implausible value of one arm's six revolute joints.

    ``needed`` are the embodiment's revolute joints of this arm, in drive order (joint 1 first).
    """
    joints = sorted(item.joint for item in limits)
    if joints != [1, 2, 3, 4, 5, 6] or len(needed) != 6 or len(policy.position_table) != 6:
        raise FirmwareLimitError(
            f"{arm} arm: expected firmware limits for drives 1-6 and 6 embodiment joints, got drives {joints} and "
            f"{len(needed)} joints"
        )
    problems = []
    for item in sorted(limits, key=lambda entry: entry.joint):
        problems += _joint_problems(item, needed[item.joint - 1], policy, f"{arm} arm joint {item.joint}")
    if problems:
        raise FirmwareLimitError(
            "refusing to run on implausible firmware limits (check the arm's settings; one user found them read "
            "back corrupted):\n  " + "\n  ".join(problems)
        )
