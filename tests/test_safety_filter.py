"""Safety filter, check by check: inside limits the output equals the input; outside, it differs and no longer
violates (libfranka style), over a matrix of checks x directions (ros2_control style), on both embodiments."""

from __future__ import annotations

import numpy as np
import pytest

from eva_runtime.safety import Check, FilterRequest, FilterState, SafetyFilter, SafetyLimits, filter_step, reset_state
from eva_runtime.safety.filter import MIN_TICK_INTERVAL_S

TOL = 1e-9


def mid_pose(limits: SafetyLimits) -> np.ndarray:
    return (limits.soft_low + limits.soft_high) / 2.0


def state_at(limits: SafetyLimits, position: np.ndarray, velocity: np.ndarray | None = None) -> FilterState:
    velocity = np.zeros(limits.dof) if velocity is None else velocity
    # A state that has been tracking at `velocity` perfectly: previous target == previous command.
    return FilterState(time=0.0, command=position.copy(), velocity=velocity.copy(), target=position.copy())


def step(limits: SafetyLimits, state: FilterState, target, dt: float | None = None, **kwargs):
    dt = limits.control_period_s if dt is None else dt
    return filter_step(limits, state, FilterRequest(time=state.time + dt, target=target, **kwargs))


def checks(result) -> set[Check]:
    return {item.check for item in result.interventions}


# --- inside limits: output equals input ------------------------------------------------------------------------


def test_smooth_in_limit_trajectory_passes_bit_for_bit(limits: SafetyLimits) -> None:
    dt = limits.control_period_s
    start = mid_pose(limits)
    span = (limits.soft_high - limits.soft_low) * 0.2
    # 1 - cos starts at rest; peak velocity/acceleration are kept at half the caps.
    omega = np.min(np.minimum(0.5 * limits.velocity_max / span, np.sqrt(0.5 * limits.acceleration_max / span)))
    state = reset_state(limits, 0.0, start)
    for k in range(1, 400):
        target = start + span * (1.0 - np.cos(omega * k * dt))
        result = filter_step(limits, state, FilterRequest(time=k * dt, target=target))
        assert not result.interventions, result.interventions
        assert np.array_equal(result.command, target)
        state = result.state


# --- the case matrix: each check, each direction, violating -> differs and no longer violates ------------------


@pytest.mark.parametrize("direction", [+1.0, -1.0], ids=["high", "low"])
def test_position_limit_clamps_to_margin(limits: SafetyLimits, direction: float) -> None:
    joint = 1
    near = mid_pose(limits)
    bound = limits.soft_high if direction > 0 else limits.soft_low
    near[joint] = bound[joint] - direction * 1e-3
    state = state_at(limits, near)
    target = near.copy()
    target[joint] = bound[joint] + direction * 0.5  # far outside the soft range
    result = step(limits, state, target)
    assert Check.POSITION_LIMIT in checks(result)
    assert limits.soft_low[joint] - TOL <= result.command[joint] <= limits.soft_high[joint] + TOL
    for _ in range(200):  # keep pushing outward: it stays inside
        result = step(limits, result.state, target)
        assert limits.soft_low[joint] - TOL <= result.command[joint] <= limits.soft_high[joint] + TOL
    assert abs(result.command[joint] - bound[joint]) < 1e-6  # and settles on the boundary, not short of it


@pytest.mark.parametrize("direction", [+1.0, -1.0], ids=["positive", "negative"])
def test_velocity_cap_scales_the_arm_and_keeps_direction(limits: SafetyLimits, direction: float) -> None:
    dt = limits.control_period_s
    pose = mid_pose(limits)
    arm = ~limits.is_gripper & (limits.arm_of_joint == 0)
    requested = np.where(arm, direction * 1.05 * limits.velocity_max * np.linspace(1.0, 0.5, limits.dof), 0.0)
    # Already moving along the requested direction at the capped speed, so only the velocity cap binds.
    state = state_at(limits, pose, requested / 1.05)
    result = step(limits, state, pose + requested * dt)
    applied = (result.command - pose) / dt
    assert Check.VELOCITY in checks(result)
    assert np.all(np.abs(applied) <= limits.velocity_max + TOL)
    ratio = applied[arm] / requested[arm]
    assert np.allclose(ratio, ratio[0]) and 0 < ratio[0] < 1  # one factor for the whole arm
    assert np.array_equal(result.command[~arm], pose[~arm])  # the other arm is untouched

    inside = np.where(arm, direction * 0.97 * limits.velocity_max, 0.0)
    result = step(limits, state_at(limits, pose, inside), pose + inside * dt)
    assert not result.interventions
    assert np.array_equal(result.command, pose + inside * dt)


@pytest.mark.parametrize("direction", [+1.0, -1.0], ids=["speed_up", "slow_down"])
def test_acceleration_cap(limits: SafetyLimits, direction: float) -> None:
    dt = limits.control_period_s
    pose = mid_pose(limits)
    start_velocity = 0.5 * limits.velocity_max
    state = state_at(limits, pose, start_velocity)
    too_much = start_velocity + direction * 2.0 * limits.acceleration_max * dt
    result = step(limits, state, pose + too_much * dt)
    applied = (result.command - pose) / dt
    assert Check.ACCELERATION in checks(result)
    assert np.all(np.abs(applied - start_velocity) <= limits.acceleration_max * dt + TOL)
    assert np.all(np.sign(applied - start_velocity) == direction)

    fine = start_velocity + direction * 0.9 * limits.acceleration_max * dt
    result = step(limits, state, pose + fine * dt)
    assert not result.interventions
    assert np.array_equal(result.command, pose + fine * dt)


@pytest.mark.parametrize("direction", [+1.0, -1.0], ids=["high", "low"])
def test_braking_stops_inside_the_limit_at_full_speed(limits: SafetyLimits, direction: float) -> None:
    joint = 0
    pose = mid_pose(limits)
    bound = limits.soft_high if direction > 0 else limits.soft_low
    speed = 0.9 * limits.velocity_max[joint]
    # Far enough to brake from this speed (v^2 / 2a plus two ticks of travel), not much more.
    room = speed**2 / (2 * limits.acceleration_max[joint]) + 2 * speed * limits.control_period_s
    pose[joint] = bound[joint] - direction * room
    velocity = np.zeros(limits.dof)
    velocity[joint] = direction * speed
    state = state_at(limits, pose, velocity)
    target = pose.copy()
    seen_braking = False
    for _ in range(400):
        target[joint] += direction * speed * limits.control_period_s  # keeps running at the limit
        result = step(limits, state, target.copy())
        seen_braking |= Check.BRAKING in checks(result)
        change = abs(result.state.velocity[joint] - state.velocity[joint])
        assert change <= limits.acceleration_max[joint] * limits.control_period_s + TOL
        assert limits.soft_low[joint] - TOL <= result.command[joint] <= limits.soft_high[joint] + TOL
        state = result.state
    assert seen_braking
    assert abs(state.velocity[joint]) < 1e-9 and abs(state.command[joint] - bound[joint]) < 1e-6


def test_jump_is_approached_without_overshoot(limits: SafetyLimits) -> None:
    pose = mid_pose(limits)
    goal = pose + np.where(limits.is_gripper, 0.25, 0.6) * (limits.soft_high - pose)
    state = reset_state(limits, 0.0, pose)
    for k in range(1, 1000):
        state = filter_step(limits, state, FilterRequest(time=k * limits.control_period_s, target=goal)).state
        assert np.all(state.command <= goal + TOL)
    assert np.allclose(state.command, goal, atol=1e-9)


def test_gripper_has_its_own_range_and_rate(limits: SafetyLimits) -> None:
    dt = limits.control_period_s
    pose = mid_pose(limits)
    grippers = limits.is_gripper
    target = np.where(grippers, limits.hard_high + 1.0, pose)  # beyond the gripper range, arms still
    result = step(limits, state_at(limits, pose), target)
    assert {i.joint for i in result.interventions} <= {limits.joint_names[i] for i in np.flatnonzero(grippers)}
    assert np.array_equal(result.command[~grippers], pose[~grippers])
    assert np.all(np.abs(result.command - pose) <= limits.velocity_max * dt + TOL)
    state = result.state
    for _ in range(2000):
        state = step(limits, state, target).state
    assert np.allclose(state.command[grippers], limits.soft_high[grippers])


# --- bad input: hold, never zero, never a jump -------------------------------------------------------------------


def moving_state(limits: SafetyLimits) -> FilterState:
    velocity = np.where(limits.is_gripper, 0.3, 0.6) * limits.velocity_max
    return state_at(limits, mid_pose(limits), velocity)


def assert_comes_to_rest(
    limits: SafetyLimits, state: FilterState, request_for_tick, joints: np.ndarray | None = None
) -> FilterState:
    """Drive ticks from `request_for_tick`; the held `joints` (default all) must roll to rest along their path."""
    joints = np.ones(limits.dof, dtype=bool) if joints is None else joints
    start = state.command.copy()
    for _ in range(400):
        result = filter_step(limits, state, request_for_tick(state.time + limits.control_period_s))
        dv = result.state.velocity - state.velocity
        assert np.all(np.abs(dv) <= limits.acceleration_max * limits.control_period_s + TOL)
        # Direction kept while braking: every joint of a group slows by the same factor.
        moving = (np.abs(state.velocity) > 0) & joints
        same_sign = np.sign(result.state.velocity[moving]) * np.sign(state.velocity[moving]) >= 0
        assert np.all(same_sign)
        state = result.state
    assert np.allclose(state.velocity[joints], 0.0)
    assert np.all(np.isfinite(state.command)) and not np.allclose(state.command[joints], 0.0)
    assert np.all(np.abs(state.command - start)[joints] > 0)  # it rolled out from speed, it did not freeze in one tick
    return state


def test_nan_target_holds_that_arm_only(limits: SafetyLimits) -> None:
    state = moving_state(limits)
    bad = state.command + state.velocity * limits.control_period_s  # continues the motion exactly
    bad[2] = np.nan
    result = step(limits, state, bad)
    assert result.holding == (limits.arm_names[0],)
    report = [i for i in result.interventions if i.check is Check.NON_FINITE_TARGET]
    assert [i.joint for i in report] == [limits.joint_names[2]]
    right = limits.arm_of_joint == 1
    assert np.array_equal(result.command[right], bad[right])  # the healthy arm still tracks
    assert np.all(np.isfinite(result.command))
    assert_comes_to_rest(limits, state, lambda t: FilterRequest(time=t, target=bad), joints=~right)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
def test_non_finite_measurement_holds_everything(limits: SafetyLimits, value: float) -> None:
    state = moving_state(limits)
    measured = state.command.copy()
    measured[9] = value
    result = step(limits, state, state.command, measured=measured)
    assert Check.NON_FINITE_MEASURED in checks(result)
    assert result.holding == limits.arm_names


@pytest.mark.parametrize("source", ["plan", "joint_state", "frame", "teleop"])
def test_stale_input_holds_and_fresh_input_does_not(limits: SafetyLimits, source: str) -> None:
    state = moving_state(limits)
    timeout = limits.timeouts_s[source]
    target = state.command + state.velocity * limits.control_period_s
    fresh = step(limits, state, target, input_stamps={source: state.time})
    assert not fresh.interventions and fresh.holding == ()
    stale = step(limits, state, target, input_stamps={source: state.time - 2 * timeout})
    report = [i for i in stale.interventions if i.check is Check.STALE_INPUT]
    assert report and report[0].joint == source and report[0].applied == timeout
    assert stale.holding == limits.arm_names
    assert_comes_to_rest(
        limits, state, lambda t: FilterRequest(time=t, target=target, input_stamps={source: -10 * timeout})
    )


def test_unknown_input_name_is_never_fresh(limits: SafetyLimits) -> None:
    state = moving_state(limits)
    result = step(limits, state, state.command, input_stamps={"lidar": state.time})
    assert result.holding == limits.arm_names and Check.STALE_INPUT in checks(result)


def test_explicit_hold_request_rolls_out_and_stays(limits: SafetyLimits) -> None:
    rested = assert_comes_to_rest(limits, moving_state(limits), lambda t: FilterRequest(time=t, target=None))
    again = filter_step(limits, rested, FilterRequest(time=rested.time + 0.01, target=None))
    assert np.array_equal(again.command, rested.command)


def test_a_stale_joint_state_is_not_compared_for_tracking_but_holds(limits: SafetyLimits) -> None:
    flt = SafetyFilter(limits)
    pose = mid_pose(limits)
    flt.reset(0.0, pose)
    dt = limits.control_period_s
    far = pose.copy()
    far[3] += 2 * limits.tracking_error_max[3]  # an old reading of an arm that has since moved
    old = {"joint_state": dt - 2 * limits.timeouts_s["joint_state"]}
    result = flt.step(dt, pose + 0.001, measured=far, input_stamps=old)
    assert Check.STALE_INPUT in checks(result) and Check.TRACKING_ERROR not in checks(result)
    assert flt.fault is None and result.holding == limits.arm_names
    fresh = flt.step(2 * dt, pose, measured=far, input_stamps={"joint_state": 2 * dt})
    assert Check.TRACKING_ERROR in checks(fresh) and flt.fault is not None  # a fresh reading is compared


def test_tracking_error_latches_a_fault_until_reset(limits: SafetyLimits) -> None:
    flt = SafetyFilter(limits)
    pose = mid_pose(limits)
    flt.reset(0.0, pose)
    dt = limits.control_period_s
    close = pose + 0.5 * limits.tracking_error_max
    assert not flt.step(dt, pose, measured=close).interventions
    far = pose.copy()
    far[3] += 2 * limits.tracking_error_max[3]
    result = flt.step(2 * dt, pose, measured=far)
    assert Check.TRACKING_ERROR in checks(result) and result.holding == limits.arm_names
    assert flt.fault is not None and limits.joint_names[3] in flt.fault
    moved = pose + 0.01
    later = flt.step(3 * dt, moved, measured=pose)  # good input again: the fault stays latched
    assert later.holding == limits.arm_names and np.array_equal(later.command, pose)
    flt.reset(4 * dt, pose)
    assert flt.fault is None
    assert not flt.step(5 * dt, pose + 1e-4).holding


def test_time_that_does_not_advance_repeats_the_last_command(limits: SafetyLimits) -> None:
    state = moving_state(limits)
    for time in (state.time, state.time - 1.0, float("nan")):
        result = filter_step(limits, state, FilterRequest(time=time, target=state.command + 1.0))
        assert result.state is state and Check.CLOCK in checks(result)


def test_an_interval_too_short_for_a_rate_is_a_clock_fault_not_a_nan(limits: SafetyLimits) -> None:
    # Subnormal intervals once overflowed the rates to inf and the command to NaN.
    state = moving_state(limits)
    for interval in (5e-324, 1e-300, 1e-12, 0.999 * MIN_TICK_INTERVAL_S):
        result = filter_step(limits, state, FilterRequest(time=state.time + interval, target=state.command + 1.0))
        assert result.state is state and Check.CLOCK in checks(result)
    result = filter_step(limits, state, FilterRequest(time=state.time + MIN_TICK_INTERVAL_S, target=state.command))
    assert result.state is not state and np.all(np.isfinite(result.command))
    assert np.all(np.isfinite(result.state.velocity))


def test_strided_and_read_only_inputs_filter_like_fresh_arrays(limits: SafetyLimits) -> None:
    # The compiled kernel takes any 1-D float64 layout; a view of a larger array must not read its neighbours.
    state = state_at(limits, mid_pose(limits))
    target = mid_pose(limits) + 0.01
    strided = np.repeat(target, 2)[::2]
    frozen = target.copy()
    frozen.setflags(write=False)
    expected = step(limits, state, target.copy()).command
    for variant in (strided, frozen, target.tolist()):
        assert np.array_equal(step(limits, state, variant).command, expected)


def test_late_tick_is_not_a_license_for_a_big_step(limits: SafetyLimits) -> None:
    state = state_at(limits, mid_pose(limits), 0.9 * limits.velocity_max)
    result = step(limits, state, limits.soft_high, dt=5.0)
    assert Check.CLOCK in checks(result)
    step_size = np.abs(result.command - state.command)
    assert np.all(step_size <= limits.velocity_max * limits.max_tick_interval_s + TOL)


# --- margins, resets and the last-resort hard limit --------------------------------------------------------------


def test_joint_inside_margin_band_may_move_inward_only(limits: SafetyLimits) -> None:
    joint = 1
    pose = mid_pose(limits)
    pose[joint] = limits.hard_high[joint] - 0.25 * (limits.hard_high[joint] - limits.soft_high[joint])
    state = reset_state(limits, 0.0, pose)
    outward = pose.copy()
    outward[joint] = limits.hard_high[joint]
    for _ in range(50):
        state = step(limits, state, outward).state
        assert state.command[joint] <= pose[joint] + TOL
    inward = pose.copy()
    inward[joint] -= 0.1
    for _ in range(200):
        state = step(limits, state, inward).state
    assert abs(state.command[joint] - inward[joint]) < 1e-9


def test_reset_with_unstoppable_speed_still_never_crosses_the_hard_limit(limits: SafetyLimits) -> None:
    joint = 0
    pose = mid_pose(limits)
    pose[joint] = limits.soft_high[joint] - 1e-3
    velocity = np.zeros(limits.dof)
    velocity[joint] = limits.velocity_max[joint]
    state = reset_state(limits, 0.0, pose, velocity)
    seen_hard = False
    for _ in range(300):
        result = step(limits, state, limits.hard_high + 1.0)
        seen_hard |= Check.HARD_LIMIT in checks(result)
        assert result.command[joint] <= limits.hard_high[joint] + TOL
        state = result.state
    margin = limits.hard_high[joint] - limits.soft_high[joint]
    # With a margin the acceleration cap has room to stop in; without one the hard clamp must act.
    assert seen_hard == (margin < limits.velocity_max[joint] ** 2 / (2 * limits.acceleration_max[joint]))


def test_reset_refuses_non_finite_or_misshaped_state(limits: SafetyLimits) -> None:
    with pytest.raises(ValueError, match="measured position"):
        reset_state(limits, 0.0, np.full(limits.dof, np.nan))
    with pytest.raises(ValueError, match="measured position"):
        reset_state(limits, 0.0, np.zeros(limits.dof - 1))
    with pytest.raises(ValueError, match="measured velocity"):
        reset_state(limits, 0.0, mid_pose(limits), np.full(limits.dof, np.inf))
    with pytest.raises(RuntimeError, match="not been seeded"):
        SafetyFilter(limits).step(0.0, mid_pose(limits))


def test_misshaped_target_is_an_error_not_a_command(limits: SafetyLimits) -> None:
    state = state_at(limits, mid_pose(limits))
    with pytest.raises(ValueError, match="target has shape"):
        step(limits, state, np.zeros(limits.dof + 1))
    with pytest.raises(ValueError, match="measured position has shape"):
        step(limits, state, state.command, measured=np.zeros(3))


def test_reset_seeds_velocity_within_the_cap(limits: SafetyLimits) -> None:
    state = reset_state(limits, 1.0, mid_pose(limits), 10 * limits.velocity_max)
    assert np.array_equal(state.velocity, limits.velocity_max)
    assert np.array_equal(state.target, state.command)


def test_reseed_moves_a_pose_past_the_range_inside_by_at_most_one_tick(limits: SafetyLimits) -> None:
    flt, dt = SafetyFilter(limits), limits.control_period_s
    pose = mid_pose(limits)
    pose[0] = limits.hard_low[0] - 0.003  # an arm joint just past its range: moved inside
    pose[1] = limits.hard_high[1] + 10.0  # far outside: moved one tick's worth, never a jump
    flt.reseed(0.0, pose, dt)
    seeded = flt.state.command
    assert seeded[0] == limits.hard_low[0]
    assert seeded[1] == pytest.approx(pose[1] - limits.velocity_max[1] * dt)
    np.testing.assert_array_equal(seeded[2:], pose[2:])  # a pose inside the range is seeded as measured
    result = flt.step(dt, None, measured=pose)
    assert np.all(result.command[:1] >= limits.hard_low[:1])  # the hold stays inside, where the re-seed put it
    pose[3] = np.nan
    with pytest.raises(ValueError, match="seed"):
        flt.reseed(dt, pose, dt)


def test_reseed_keeps_a_grippers_last_command_whatever_it_measures(limits: SafetyLimits) -> None:
    flt, dt = SafetyFilter(limits), limits.control_period_s
    grippers = np.flatnonzero(limits.is_gripper)
    pose = mid_pose(limits)
    pose[grippers] = limits.hard_low[grippers] + 0.005  # squeezing: commanded near closed
    flt.reset(0.0, pose)
    measured = pose.copy()
    measured[grippers] = [1.09, -0.24]  # what the simulated fingers read on an object: far outside the range
    flt.reseed(dt, measured, dt)
    seeded = flt.state.command
    np.testing.assert_array_equal(seeded[grippers], pose[grippers])  # the squeeze is kept, nothing opens
    arms = ~limits.is_gripper
    np.testing.assert_array_equal(seeded[arms], measured[arms])
    for tick in range(2, 20):  # holding keeps every command inside the range
        command = flt.step(tick * dt, None, measured=measured).command
        assert np.all(command >= limits.hard_low) and np.all(command <= limits.hard_high)
    when, reading, seed = flt.last_reseed  # what the re-seed started from, for ~/status and the chaos soak
    assert when == dt
    np.testing.assert_array_equal(reading, measured)
    np.testing.assert_array_equal(seed, seeded)
    measured[0] = 99.0
    assert flt.last_reseed[1][0] != 99.0  # a copy: the caller's array may change


def test_reseed_brings_a_gripper_seeded_outside_its_range_inside(limits: SafetyLimits) -> None:
    flt, dt = SafetyFilter(limits), limits.control_period_s
    grip = int(np.flatnonzero(limits.is_gripper)[0])
    pose = mid_pose(limits)
    pose[grip] = -0.24
    flt.reset(0.0, pose)  # a first seed from a bad reading: outside
    flt.reseed(dt, pose, dt)
    assert flt.state.command[grip] == limits.hard_low[grip]
    assert flt.step(2 * dt, None, measured=pose).command[grip] == limits.hard_low[grip]
