"""Piper unit conversions, status-code descriptions and firmware-limit checks (pure functions, no bus)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eva_runtime.embodiment import load_embodiment
from eva_runtime.robots.piper.firmware_limits import (
    FirmwareLimitError,
    FirmwareLimitPolicy,
    JointLimitReading,
    JointLimits,
    check_arm_limits,
)
from eva_runtime.robots.piper.status import ARM_STATUS_NAMES, ArmStatusFrame, describe_status
from eva_runtime.robots.piper.units import (
    MILLIDEG_PER_RAD,
    GripperScale,
    deci_degrees_to_rad,
    milli_per_second_to_rad_s,
    millideg_to_rad,
    newton_metres_to_milli_newton_metres,
    rad_to_millideg,
)
from tests.conftest import CALIBRATION

JOINT_QUANTUM = 1.0 / MILLIDEG_PER_RAD  # one 0.001 degree step, in rad
VENDOR_ROS_FACTOR = 1000 * 180 / 3.14  # 57324.84: the vendor ROS node's factor (pi written as 3.14)
COBOT = load_embodiment(CALIBRATION / "cobot_magic.yaml")
LEFT_REVOLUTE = COBOT.arms[0].joints[:6]


# ---- joints -------------------------------------------------------------------------------------------------
def test_joint_factor_is_exactly_180000_over_pi() -> None:
    assert math.pi * MILLIDEG_PER_RAD == pytest.approx(180000, rel=1e-15)
    assert round(MILLIDEG_PER_RAD, 4) == 57295.7795


@pytest.mark.parametrize(
    ("rad", "millideg"),
    [(0.0, 0), (math.pi, 180000), (-math.pi / 2, -90000), (1.0, 57296), (-2.6179, -149995), (3.14, 179909)],
)
def test_joint_angles_encode_to_the_nearest_thousandth_degree(rad: float, millideg: int) -> None:
    assert rad_to_millideg(rad) == millideg
    assert isinstance(rad_to_millideg(rad), int)


def test_vendor_factor_is_detectably_different() -> None:
    # 1 rad: 57296 here, 57325 with the vendor node's factor: 29 quanta (0.05 %) apart.
    assert round(1.0 * VENDOR_ROS_FACTOR) - rad_to_millideg(1.0) == 29
    # Read back through the exact inverse, the vendor encoding of J1's limit is off by 1.3 mrad, ~76 quanta.
    error = millideg_to_rad(round(2.6179 * VENDOR_ROS_FACTOR)) - 2.6179
    assert 75 * JOINT_QUANTUM < error < 77 * JOINT_QUANTUM


@given(st.floats(min_value=0.04, max_value=3.2))
def test_vendor_factor_differs_by_more_than_one_quantum_beyond_small_angles(rad: float) -> None:
    for signed in (rad, -rad):
        assert abs(round(signed * VENDOR_ROS_FACTOR) - rad_to_millideg(signed)) >= 1


@given(st.floats(min_value=-2 * math.pi, max_value=2 * math.pi))
def test_joint_round_trip_error_is_within_half_a_quantum(rad: float) -> None:
    assert abs(millideg_to_rad(rad_to_millideg(rad)) - rad) <= 0.5 * JOINT_QUANTUM * (1 + 1e-9)


@given(st.integers(min_value=-360_000, max_value=360_000))
def test_integer_angles_survive_decode_and_encode_exactly(millideg: int) -> None:
    assert rad_to_millideg(millideg_to_rad(millideg)) == millideg


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e12])
def test_joint_encoding_refuses_non_finite_and_overflowing_values(bad: float) -> None:
    with pytest.raises(ValueError, match="joint angle"):
        rad_to_millideg(bad)


# ---- gripper and other units ----------------------------------------------------------------------------------
def test_cobot_magic_gripper_is_in_metres_and_maps_to_micrometres() -> None:
    scale = GripperScale(COBOT.gripper_units)
    assert COBOT.gripper_units == "m"
    assert scale.to_micrometres(0.07) == 70000
    assert scale.to_micrometres(0.0351234) == 35123
    assert scale.from_micrometres(35123) == pytest.approx(0.035123, abs=1e-15)
    assert scale.quantum() == 1e-6


def test_normalized_gripper_scales_by_full_opening() -> None:
    scale = GripperScale("normalized", full_open_m=0.07)
    assert scale.to_micrometres(1.0) == 70000
    assert scale.to_micrometres(0.5) == 35000
    assert scale.from_micrometres(70000) == pytest.approx(1.0)


@given(st.floats(min_value=0.0, max_value=0.08), st.sampled_from(["m", "normalized"]))
def test_gripper_round_trip_error_is_within_half_a_quantum(value: float, units: str) -> None:
    scale = GripperScale(units)  # type: ignore[arg-type]
    assert abs(scale.from_micrometres(scale.to_micrometres(value)) - value) <= 0.5 * scale.quantum() * (1 + 1e-9)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e6])
def test_gripper_encoding_refuses_non_finite_and_overflowing_values(bad: float) -> None:
    with pytest.raises(ValueError, match="gripper"):
        GripperScale("m").to_micrometres(bad)


def test_effort_and_firmware_units() -> None:
    assert newton_metres_to_milli_newton_metres(1.0) == 1000
    assert newton_metres_to_milli_newton_metres(5.0) == 5000
    for bad in (5.001, -0.1, math.nan):
        with pytest.raises(ValueError, match="effort"):
            newton_metres_to_milli_newton_metres(bad)
    assert deci_degrees_to_rad(1800) == pytest.approx(math.pi, abs=1e-15)
    assert milli_per_second_to_rad_s(3000) == 3.0


# ---- status codes ---------------------------------------------------------------------------------------------
def _status(arm_status: int = 0, err_code: int = 0, ctrl_mode: int = 0x01) -> ArmStatusFrame:
    return ArmStatusFrame(ctrl_mode=ctrl_mode, arm_status=arm_status, mode_feed=0x01, err_code=err_code)


def test_normal_status_is_no_fault() -> None:
    assert describe_status(_status(), drive_status=[0x40] * 6, gripper_status=0x40, expect_enabled=True) is None


@pytest.mark.parametrize("code", sorted(set(ARM_STATUS_NAMES) - {0x00}))
def test_every_arm_status_code_is_a_named_fault(code: int) -> None:
    fault = describe_status(_status(code))
    assert fault == f"arm status 0x{code:02X} ({ARM_STATUS_NAMES[code]})"


def test_documented_codes_have_the_documented_names() -> None:
    assert ARM_STATUS_NAMES[0x01] == "emergency stop"
    assert ARM_STATUS_NAMES[0x07] == "collision"
    assert "over-temperature" in ARM_STATUS_NAMES[0x0E]
    assert "over-temperature" in ARM_STATUS_NAMES[0x0F]


def test_unknown_status_code_is_reported_with_its_number() -> None:
    assert describe_status(_status(0x1F)) == "arm status 0x1F (unknown arm status)"


def test_error_bits_name_the_joint() -> None:
    # Byte 6 (high byte) flags angle limits, byte 7 (low byte) communication errors.
    fault = describe_status(_status(err_code=(1 << 10) | (1 << 1)))
    assert fault == "joint 3 angle limit exceeded; joint 2 communication error"


def test_drive_and_gripper_bits_and_dropped_enable() -> None:
    drives = [0x40, 0x40, 0x40, 0x40 | 0x20, 0x00, 0x40]  # joint 4 drive error, joint 5 not enabled
    fault = describe_status(_status(), drives, gripper_status=0x40 | 0x02, expect_enabled=True)
    assert fault == "joint 4 drive error; joint 5 drive disabled; gripper motor over-temperature"
    assert describe_status(_status(), [0x00] * 6, 0x00, expect_enabled=False) is None


def test_leaving_can_control_mode_is_a_fault_once_commanding() -> None:
    assert describe_status(_status(ctrl_mode=0x02), expect_can_mode=False) is None
    assert describe_status(_status(ctrl_mode=0x02), expect_can_mode=True) == (
        "not in CAN control mode (ctrl_mode 0x02 teach)"
    )


# ---- firmware limits ------------------------------------------------------------------------------------------
POLICY = FirmwareLimitPolicy()
GOOD_READINGS = [
    JointLimitReading(1, 1500, -1500, 3000, 500),
    JointLimitReading(2, 1800, 0, 3000, 500),
    JointLimitReading(3, 0, -1700, 3000, 500),
    JointLimitReading(4, 1000, -1000, 3000, 500),
    JointLimitReading(5, 700, -700, 3000, 500),
    JointLimitReading(6, 1200, -1200, 3000, 500),
]


def _limits(**override: float) -> list[JointLimits]:
    """The factory limits, with joint 4 (index 3) replaced by the given fields."""
    limits = [POLICY.convert(reading) for reading in GOOD_READINGS]
    fields = {**limits[3].__dict__, **override}
    limits[3] = JointLimits(**fields)
    return limits


def test_factory_limits_pass_for_cobot_magic() -> None:
    check_arm_limits("left", [POLICY.convert(r) for r in GOOD_READINGS], LEFT_REVOLUTE, POLICY)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"position_max": math.nan}, "position max is nan, not a finite number"),
        ({"velocity_max": math.inf}, "velocity max is inf, not a finite number"),
        ({"position_min": 1.0, "position_max": 1.0}, "position min 1.0000 rad is not below max 1.0000 rad"),
        ({"position_min": 1.5, "position_max": -1.5}, "is not below max"),
        ({"position_max": 3.0}, "wider than the SDK table [-1.7450, 1.7450] rad"),
        ({"position_max": 1.0}, "does not cover the embodiment's [-1.7450, 1.7450] rad for left_joint4"),
        ({"velocity_max": 32.767}, "velocity max 32.767 rad/s is out of range (allowed: (0, 3] rad/s)"),
        ({"velocity_max": 0.0}, "velocity max 0.000 rad/s is out of range"),
        ({"velocity_max": 1.0}, "below the embodiment's velocity_max 3 rad/s for left_joint4"),
        (
            {"acceleration_max": 327.67},
            "acceleration max 327.670 rad/s^2 (read as 0.01 rad/s^2 per count) is out of range (allowed: (0, 5]",
        ),
        ({"acceleration_max": 2.0}, "below the embodiment's acceleration_max 5 rad/s^2"),
    ],
)
def test_implausible_limits_are_refused_naming_joint_value_and_range(override: dict, message: str) -> None:
    with pytest.raises(FirmwareLimitError) as caught:
        check_arm_limits("left", _limits(**override), LEFT_REVOLUTE, POLICY)
    assert "left arm joint 4" in str(caught.value)
    assert message in str(caught.value)
    assert "(allowed: " in str(caught.value)


def test_missing_drive_is_refused() -> None:
    with pytest.raises(FirmwareLimitError, match=r"drives 1-6.*got drives \[1, 2, 3, 4, 5\]"):
        check_arm_limits("left", [POLICY.convert(r) for r in GOOD_READINGS[:5]], LEFT_REVOLUTE, POLICY)


def test_acceleration_unit_is_configuration() -> None:
    reading = GOOD_READINGS[0]
    assert POLICY.convert(reading).acceleration_max == pytest.approx(5.0)
    assert FirmwareLimitPolicy(acceleration_unit=0.001).convert(reading).acceleration_max == pytest.approx(0.5)
