"""Unit conversions between the embodiment (rad, rad/s, metres or 0-1 gripper) and the Piper's integer CAN units.

Piper units (piper-sdk 0.6.2 message docs): joint angles in 0.001 degree, gripper opening in 0.001 mm (micrometres),
gripper effort in 0.001 N*m, drive speed in 0.001 rad/s, firmware angle limits in 0.1 degree, firmware speed caps in
0.001 rad/s. Every conversion to the bus rounds to the nearest integer and refuses non-finite input, so a NaN can
never be encoded into a frame. The joint factor is exactly 180000/pi; one vendor ROS node uses 1000*180/3.14
(57324.84), a 0.05 % scale error that this module must never reproduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "MILLIDEG_PER_RAD",
    "GripperScale",
    "deci_degrees_to_rad",
    "milli_newton_metres_to_newton_metres",
    "milli_per_second_to_rad_s",
    "millideg_to_rad",
    "newton_metres_to_milli_newton_metres",
    "rad_to_millideg",
]

MILLIDEG_PER_RAD = 180000.0 / math.pi  # 57295.7795...
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _to_int(value: float, scale: float, what: str, low: int = INT32_MIN, high: int = INT32_MAX) -> int:
    if not math.isfinite(value):
        raise ValueError(f"{what}: refusing to encode non-finite value {value!r}")
    encoded = round(value * scale)
    if not low <= encoded <= high:
        raise ValueError(f"{what}: {value!r} encodes to {encoded}, outside the frame's range [{low}, {high}]")
    return encoded


def rad_to_millideg(rad: float) -> int:
    """Joint angle in rad -> the JointCtrl integer (0.001 degree), rounded to the nearest quantum."""
    return _to_int(rad, MILLIDEG_PER_RAD, "joint angle (rad)")


def millideg_to_rad(millideg: int) -> float:
    return millideg / MILLIDEG_PER_RAD


def deci_degrees_to_rad(deci_degrees: int) -> float:
    """Firmware angle limits (0x473) are reported in 0.1 degree."""
    return deci_degrees * math.pi / 1800.0


def milli_per_second_to_rad_s(value: int) -> float:
    """Drive speed (0x251-0x256) and firmware speed caps (0x473) are in 0.001 rad/s."""
    return value / 1000.0


def newton_metres_to_milli_newton_metres(effort: float) -> int:
    """Gripper effort for GripperCtrl: 0.001 N*m, 0..5000 (the SDK rejects anything else)."""
    return _to_int(effort, 1000.0, "gripper effort (N*m)", 0, 5000)


def milli_newton_metres_to_newton_metres(value: int) -> float:
    return value / 1000.0


@dataclass(frozen=True)
class GripperScale:
    """Gripper value in the embodiment's unit <-> opening in micrometres (GripperCtrl and the 0x2A8 feedback).

    ``units="m"``: the value is the opening width in metres, as the SDK and the vendor ROS node use it (exactly
    1e6 micrometres per metre). ``units="normalized"``: 0 is closed and 1 is ``full_open_m`` metres open.
    """

    units: Literal["m", "normalized"]
    full_open_m: float = 0.07  # only used for "normalized"; SDK soft-limit default (docs/references.md §1)

    def __post_init__(self) -> None:
        if self.units not in ("m", "normalized"):
            raise ValueError(f"gripper units must be 'm' or 'normalized', got {self.units!r}")
        if not (math.isfinite(self.full_open_m) and 0.0 < self.full_open_m <= 0.15):
            raise ValueError(f"gripper full_open_m must be in (0, 0.15] m, got {self.full_open_m!r}")

    @property
    def _metres_per_unit(self) -> float:
        return 1.0 if self.units == "m" else self.full_open_m

    def to_micrometres(self, value: float) -> int:
        return _to_int(value, self._metres_per_unit * 1e6, f"gripper opening ({self.units})")

    def from_micrometres(self, micrometres: int) -> float:
        return micrometres / (self._metres_per_unit * 1e6)

    def quantum(self) -> float:
        """One micrometre in the embodiment's unit: the resolution of the gripper on the bus."""
        return 1.0 / (self._metres_per_unit * 1e6)
