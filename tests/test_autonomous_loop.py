"""The control loop's tick, phase by phase, on simulated time: a fake robot (perfect tracking, stamped frames), an
in-process planner that answers after a simulated latency, and one clock that the test advances. No process, no
sleep: what is tested is behaviour (what is commanded, when a plan is asked for, which mode, what is recorded).
"""

from __future__ import annotations

import numpy as np
import pytest

from eva_runtime.control.autonomous_loop import AutonomousLoop, LoopSettings
from eva_runtime.control.executor import Plan
from eva_runtime.control.modes import Mode, Trigger
from eva_runtime.control.planner import PlanOutcome, PlanRequest
from eva_runtime.control.planner_port import InProcessPlanner, PlannerPort
from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety import SafetyLimits
from tests.conftest import CALIBRATION
from tests.fakes import Clock, FakeRobot


def _home(limits: SafetyLimits) -> np.ndarray:
    return (limits.soft_low + limits.soft_high) / 2


def ramp_planner(clock: Clock, robot: FakeRobot, latency_s: float = 0.3, reject: bool = False) -> InProcessPlanner:
    """Plans that move every joint slowly away from where the robot is (well inside every cap)."""

    def plan(request: PlanRequest) -> PlanOutcome:
        if reject:
            return PlanOutcome(None, (-1.0,), latency_s, "best reward -1 < 0")
        steps = np.arange(37)[:, None] * 0.002
        return PlanOutcome(Plan(request.time, 12.5, robot.position + steps, "ramp", 1.0), (1.0,), latency_s)

    return InProcessPlanner(plan, clock, latency_s)


def make_loop(latency_s: float = 0.3, reject: bool = False, **settings) -> tuple[AutonomousLoop, FakeRobot, Clock]:
    clock = Clock()
    embodiment = load_embodiment(CALIBRATION / "aloha_sim.yaml")
    robot = FakeRobot(clock, _home(SafetyLimits.from_embodiment(embodiment)))
    planner = ramp_planner(clock, robot, latency_s, reject)
    loop = AutonomousLoop(robot, planner, LoopSettings(pace=False, **settings), clock=clock, instruction="do it")
    loop.start(seed=3)
    return loop, robot, clock


def run(loop: AutonomousLoop, clock: Clock, ticks: int) -> list:
    results = []
    for _ in range(ticks):
        results.append(loop.tick())
        clock.t += loop.period
    return results


def test_the_in_process_planner_is_a_planner_port() -> None:
    assert isinstance(ramp_planner(Clock(), None), PlannerPort)  # type: ignore[arg-type]


def test_the_robot_holds_until_the_first_plan_lands_then_follows_it() -> None:
    loop, robot, clock = make_loop(latency_s=0.3)
    start = robot.position.copy()
    results = run(loop, clock, 40)
    first_request = next(i for i, r in enumerate(results) if r.submitted is not None)
    landed = next(i for i, r in enumerate(results) if r.installed is not None)
    assert first_request == 0
    assert landed * loop.period == pytest.approx(0.3, abs=1.5 * loop.period)  # the simulated latency, nothing else
    assert all(r.target is None for r in results[:landed])
    np.testing.assert_array_equal(robot.sent[landed - 1], start)  # held still while waiting
    assert results[-1].target is not None and np.all(robot.position >= start - 1e-12)
    assert np.max(robot.position - start) > 0.01  # and then moved along the plan
    assert loop.stats.plans >= 1 and loop.stats.hold_ticks == landed
    assert loop.stats.first_command_s == pytest.approx(landed * loop.period, abs=1e-9)


def test_the_next_plan_is_asked_for_before_the_current_one_runs_out_so_the_robot_never_idles() -> None:
    loop, _, clock = make_loop(latency_s=0.5)
    results = run(loop, clock, 400)
    landed = next(i for i, r in enumerate(results) if r.installed is not None)
    assert loop.stats.plans >= 3
    assert all(r.target is not None for r in results[landed:])  # no hold between plans
    assert all(r.target is not None for r in results[landed:] if r.submitted is not None)  # asked while moving
    assert len(loop.planner.requests) == loop.stats.plans or len(loop.planner.requests) == loop.stats.plans + 1


def test_synchronous_mode_asks_only_when_the_plan_has_run_out() -> None:
    loop, _, clock = make_loop(latency_s=0.5, synchronous=True)
    results = run(loop, clock, 300)
    assert loop.stats.plans >= 2
    # Every request comes on a tick with nothing left to execute (async asks while still moving, below).
    assert all(r.target is None for r in results if r.submitted is not None)
    holds = sum(r.target is None for r in results)
    assert holds > 2 * int(0.5 / loop.period)  # every plan's latency is spent holding


def test_a_synchronous_plan_starts_when_it_lands_so_no_action_is_skipped() -> None:
    # The robot held while the plan was made: its first action is where the robot is when it lands. Stamped at the
    # request instead, a 1 s latency would drop the first 12 of 37 actions and blend into the plan's middle.
    loop, robot, clock = make_loop(latency_s=1.0, synchronous=True)
    results = run(loop, clock, 300)
    landed = [(i, r.installed[1]) for i, r in enumerate(results) if r.installed is not None]
    assert len(landed) >= 2 and loop.stats.dropped_actions == 0
    for tick, plan in landed:
        assert plan.start_time == pytest.approx(results[tick].time)
    np.testing.assert_allclose(robot.sent[landed[0][0]], landed[0][1].actions[0], atol=1e-3)  # no jump
    # Async keeps the observation's stamp: the latency's share of each plan is behind the robot when it lands.
    loop, _, clock = make_loop(latency_s=1.0)
    run(loop, clock, 300)
    assert loop.stats.dropped_actions >= 12


def test_a_synchronous_plan_entered_later_drops_its_first_seconds_as_an_asynchronous_one_does() -> None:
    # The diagnostic between the two loops: held while planning (synchronous) but entering each plan where an
    # asynchronous loop with this latency would, 1 s in: 12.5 of its 37 actions at 12.5 fps are behind the robot.
    loop, _, clock = make_loop(latency_s=0.5, synchronous=True, synchronous_skip_s=1.0)
    results = run(loop, clock, 300)
    landed = [(i, r.installed[1]) for i, r in enumerate(results) if r.installed is not None]
    assert len(landed) >= 2
    for tick, plan in landed:
        assert plan.start_time == pytest.approx(results[tick].time - 1.0)
    assert loop.stats.dropped_actions >= 12 * len(landed)
    # Only the remaining 1.96 s of each plan runs before the next request, held for the 0.5 s latency: plans land
    # ~2.46 s apart (without the skip, 2.96 + 0.5 s).
    requested = [i for i, r in enumerate(results) if r.submitted is not None]
    assert all(results[i].target is None for i in requested)
    gaps = np.diff([tick for tick, _ in landed]) * loop.period
    assert np.all((gaps > 2.3) & (gaps < 2.7)), gaps


@pytest.mark.parametrize("settings", [{"synchronous_skip_s": 1.0}, {"synchronous": True, "synchronous_skip_s": -0.5}])
def test_a_skip_without_synchronous_planning_or_below_zero_is_refused(settings: dict) -> None:
    with pytest.raises(ValueError, match="synchronous_skip_s"):
        LoopSettings(**settings)


def imagining_loop(latency_s: float, committed: int) -> tuple[AutonomousLoop, list[PlanRequest], Clock]:
    """The ramp planner whose plans carry their imagined frames: frame k of the n-th plan is all 10 n + k (so
    which frames a request committed to can be read off them), starting after any committed frames."""
    clock = Clock()
    embodiment = load_embodiment(CALIBRATION / "aloha_sim.yaml")
    robot = FakeRobot(clock, _home(SafetyLimits.from_embodiment(embodiment)))
    requests: list[PlanRequest] = []

    def plan(request: PlanRequest) -> PlanOutcome:
        requests.append(request)
        steps = np.arange(37)[:, None] * 0.002
        video = (10 * len(requests) + np.arange(37, dtype=np.uint8))[:, None, None, None] * np.ones((1, 2, 2, 3))
        metadata = {"imagined": {"cam_high": video.astype(np.uint8)}}
        start = request.start_time(12.5)
        return PlanOutcome(Plan(start, 12.5, robot.position + steps, "ramp", 1.0, metadata=metadata), (1.0,), 0.1)

    settings = LoopSettings(pace=False, committed_frames=committed)
    planner = InProcessPlanner(plan, clock, latency_s)
    loop = AutonomousLoop(robot, planner, settings, clock=clock, instruction="do it")
    loop.start(seed=3)
    return loop, requests, clock


def test_a_plan_is_conditioned_on_the_frames_the_robot_is_committed_to_and_starts_after_them() -> None:
    loop, requests, clock = imagining_loop(latency_s=1.0, committed=12)
    results = run(loop, clock, 400)
    assert requests[0].committed is None  # nothing is executing yet: the observation alone
    landed = [r.installed[1] for r in results if r.installed is not None]
    assert len(landed) >= 3 and len(requests) >= 3
    for n, request in enumerate(requests[1:], start=1):
        executing = landed[n - 1]  # each request is made while the previous plan runs (asked for in time)
        assert request.committed is not None, n
        frames = request.committed["cam_high"]
        first = round((request.time - executing.start_time) * 12.5) + 1
        assert len(frames) == 12 and np.all(frames[:, 0, 0, 0] == 10 * n + first + np.arange(12))
    for request, plan in zip(requests, landed, strict=False):
        offset = 12 / 12.5 if request.committed is not None else 0.0
        assert plan.start_time == pytest.approx(request.time + offset)
    # Entered where the robot is when it lands (1 s after the request, 0.96 s of it committed): at most one
    # frame dropped per plan, against 12 asynchronously without a commitment (the first plan, asked for from a
    # standing start with nothing to commit to, drops its 12 either way).
    assert loop.stats.dropped_actions <= 12 + (len(landed) - 1)
    plain, _, clock = imagining_loop(latency_s=1.0, committed=0)
    run(plain, clock, 400)
    assert plain.stats.dropped_actions >= 12 * (plain.stats.plans - 1)


def test_committed_frames_are_refused_below_zero_and_with_synchronous_planning() -> None:
    with pytest.raises(ValueError, match="committed_frames"):
        LoopSettings(committed_frames=-1)
    with pytest.raises(ValueError, match="committed_frames"):
        LoopSettings(committed_frames=12, synchronous=True)


def test_a_rejection_holds_records_why_and_plans_again() -> None:
    loop, _, clock = make_loop(latency_s=0.2, reject=True)
    results = run(loop, clock, 60)
    rejected = [e for r in results for e in r.events if e.trigger is Trigger.PLAN_REJECTED]
    assert rejected and "best reward" in rejected[0].detail
    assert loop.stats.rejected >= 2 and loop.stats.plans == 0
    assert all(r.target is None for r in results)
    assert len(loop.planner.requests) >= 2  # an automatic hold keeps asking


def test_a_silent_planner_times_out_into_hold_and_a_late_plan_resumes() -> None:
    loop, _, clock = make_loop(latency_s=1.5, planner_timeout_s=1.0)
    results = run(loop, clock, 120)
    timeouts = [(i, e) for i, r in enumerate(results) for e in r.events if e.trigger is Trigger.PLANNER_TIMEOUT]
    assert timeouts and timeouts[0][1].after is Mode.HOLD
    assert timeouts[0][0] * loop.period == pytest.approx(1.0, abs=2 * loop.period)
    resumed = [e for r in results for e in r.events if e.trigger is Trigger.CAUSE_CLEARED and e.accepted]
    assert resumed and loop.stats.plans >= 1 and loop.stats.planner_faults >= 1


def test_a_dead_planner_holds_and_is_restarted() -> None:
    loop, _, clock = make_loop(latency_s=0.2)
    restarts = []
    loop.restart_planner = lambda: (restarts.append(clock()), loop.planner.restart())
    run(loop, clock, 30)
    loop.planner.die()
    result = loop.tick()
    assert result.target is None and result.mode is Mode.HOLD and len(restarts) == 1
    assert any(e.trigger is Trigger.PLANNER_TIMEOUT and "ended" in e.detail for e in result.events)
    clock.t += loop.period
    after = run(loop, clock, 40)
    assert after[-1].mode is Mode.AUTONOMOUS and after[-1].target is not None


def test_stale_frames_are_never_planned_from() -> None:
    loop, robot, clock = make_loop(latency_s=0.2)
    robot.frame_stamp = clock() - 1.0  # older than the 0.5 s frame timeout
    results = run(loop, clock, 20)
    assert not loop.planner.requests
    assert results[0].mode is Mode.HOLD
    assert any(e.trigger is Trigger.STALE_INPUT and "stale frames" in e.detail for e in results[0].events)
    robot.frame_stamp = None
    later = run(loop, clock, 30)
    assert loop.planner.requests and later[-1].mode is Mode.AUTONOMOUS


def test_a_camera_that_never_delivered_counts_as_stale() -> None:
    loop, robot, clock = make_loop()
    robot.cameras_on = False
    results = run(loop, clock, 5)
    assert not loop.planner.requests and results[-1].mode is Mode.HOLD


def test_stale_joint_state_holds_through_the_filter_and_the_mode() -> None:
    loop, robot, clock = make_loop(latency_s=0.1)
    run(loop, clock, 30)
    robot.state_stamp = clock() - 0.5
    held = robot.position.copy()
    result = loop.tick()
    assert any(e.trigger is Trigger.STALE_INPUT and "joint state" in e.detail for e in result.events)
    assert result.mode is Mode.HOLD and loop.executor.plan is None
    np.testing.assert_allclose(result.applied, held, atol=1e-3)  # braking from a slow motion: no jump


def test_a_stale_joint_state_hold_ends_only_with_fresh_joint_state_not_with_a_new_plan() -> None:
    loop, robot, clock = make_loop(latency_s=0.1)
    run(loop, clock, 30)
    robot.state_stamp = clock() - 0.3  # the driver dropped out; frames keep coming, so plans keep coming
    results = run(loop, clock, 20)
    assert all(r.mode is Mode.HOLD for r in results[1:])  # no AUTONOMOUS tick on a new plan while stale
    assert not any(e.trigger is Trigger.CAUSE_CLEARED for r in results for e in r.events)
    assert any(r.installed for r in results) or loop.executor.plan is not None  # a plan did arrive meanwhile
    robot.state_stamp = None  # fresh again
    results = run(loop, clock, 40)
    cleared = [e for r in results for e in r.events if e.trigger is Trigger.CAUSE_CLEARED and e.accepted]
    assert cleared and "fresh" in cleared[0].detail and results[-1].mode is Mode.AUTONOMOUS


def test_a_stale_frame_hold_ends_only_with_a_plan_from_newer_frames() -> None:
    loop, robot, clock = make_loop(latency_s=0.5)
    run(loop, clock, 30)  # a plan runs; the next request comes near its end
    robot.frame_stamp = clock() - 1.0
    results = run(loop, clock, 200)
    stale = [e for r in results for e in r.events if e.trigger is Trigger.STALE_INPUT and e.accepted]
    assert len(stale) == 1 and "frames" in stale[0].detail
    assert all(r.mode is Mode.HOLD for r in results if r.time >= stale[0].time)  # nothing lifts it while stale
    robot.frame_stamp = None
    results = run(loop, clock, 60)
    assert results[-1].mode is Mode.AUTONOMOUS and loop.executor.plan.start_time > stale[0].time


def test_a_robot_silent_past_its_timeout_is_a_fault_and_autonomy_is_refused_while_stale() -> None:
    loop, robot, clock = make_loop(latency_s=0.1)
    assert loop.robot_timeout is None  # off unless configured (aloha_sim.yaml does not)
    loop.robot_timeout = 3.0  # as `timeouts_s.robot: 3.0` in an embodiment would
    run(loop, clock, 30)
    robot.state_stamp = clock()
    results = run(loop, clock, 170)  # 3.4 s without a joint state
    faults = [e for r in results for e in r.events if e.trigger is Trigger.ROBOT_FAULT and e.accepted]
    assert len(faults) == 1 and "robot silent" in faults[0].detail and results[-1].mode is Mode.FAULT
    # A reset re-seeds the filter from the joint state: not from one 3.4 s old (the arm may be anywhere now).
    refused = loop.command(Trigger.OPERATOR_RESET)
    assert not refused.accepted and "re-seeded" in refused.detail and loop.modes.mode is Mode.FAULT
    assert refused in loop.stats.mode_events  # a refusal is part of the episode's record
    robot.state_stamp = None
    assert loop.command(Trigger.OPERATOR_RESET).accepted  # the operator acknowledges: HOLD
    robot.state_stamp = clock() - 3.5  # silent again, past the robot timeout but already reset
    refused = loop.command(Trigger.OPERATOR_AUTONOMOUS)
    assert not refused.accepted and "robot silent" in refused.detail and loop.modes.mode is Mode.HOLD
    robot.state_stamp = None
    assert loop.command(Trigger.OPERATOR_AUTONOMOUS).accepted


def test_leaving_estop_reseeds_only_from_a_fresh_joint_state() -> None:
    """The chaos soak's arm steps at a release: a seed from an old reading of a moving arm is a jump."""
    loop, robot, clock = make_loop(latency_s=0.1)
    run(loop, clock, 30)
    assert loop.command(Trigger.OPERATOR_ESTOP).accepted
    robot.position = robot.position + 0.3  # the arm moved while nobody commanded it (firmware, a person)
    robot.state_stamp = clock() - 0.5  # and the newest reading is older than the joint-state timeout
    refused = loop.command(Trigger.OPERATOR_RELEASE)
    assert not refused.accepted and "0.50 s old" in refused.detail and loop.modes.mode is Mode.ESTOP
    robot.state_stamp = None
    assert loop.command(Trigger.OPERATOR_RELEASE).accepted and loop.modes.mode is Mode.HOLD
    arms = ~loop.safety.limits.is_gripper
    assert np.allclose(loop.safety.state.command[arms], robot.position[arms])  # seeded where the arm is now


def test_leaving_estop_waits_for_the_arm_to_rest() -> None:
    """The chaos soak's remaining arm steps: a fresh reading of an arm the simulator was throwing at 2-3 rad/s is
    0.2-0.85 rad from where the arm is a tick later, so a seed from it is a jump however fresh."""
    loop, robot, clock = make_loop(latency_s=0.1)
    run(loop, clock, 30)
    assert loop.command(Trigger.OPERATOR_ESTOP).accepted
    limits = loop.safety.limits
    robot.velocity = np.where(limits.is_gripper, 0.0, 0.1)
    robot.velocity[9] = 2.5  # right elbow thrown by a contact
    refused = loop.command(Trigger.OPERATOR_RELEASE)
    assert not refused.accepted and loop.modes.mode is Mode.ESTOP
    assert "not at rest" in refused.detail and limits.joint_names[9] in refused.detail
    robot.velocity[9] = np.nan  # an unreadable velocity is not a resting arm
    assert not loop.command(Trigger.OPERATOR_RELEASE).accepted
    robot.velocity = np.where(limits.is_gripper, 3.0, 0.1)  # at rest, grippers still closing: their seed is kept
    robot.position = robot.position + np.where(limits.is_gripper, 0.0, 0.2)
    assert loop.command(Trigger.OPERATOR_RELEASE).accepted and loop.modes.mode is Mode.HOLD
    arms = ~limits.is_gripper
    assert np.allclose(loop.safety.state.command[arms], robot.position[arms])


def test_an_estop_out_of_a_fault_keeps_holding_and_its_release_reseeds() -> None:
    loop, robot, clock = make_loop(latency_s=0.1)
    run(loop, clock, 20)
    robot.fault = "tracking error"
    assert loop.tick().mode is Mode.FAULT
    held = loop.safety.state
    robot.fault, robot.position = None, robot.position + 0.1  # the arm was thrown while the fault held
    assert loop.command(Trigger.OPERATOR_ESTOP).accepted and loop.safety.state is held
    assert loop.command(Trigger.OPERATOR_RELEASE).accepted and loop.modes.mode is Mode.HOLD
    arms = ~loop.safety.limits.is_gripper
    assert np.allclose(loop.safety.state.command[arms], robot.position[arms])


def test_an_estop_is_never_refused_even_from_a_fault_with_a_stale_joint_state() -> None:
    loop, robot, clock = make_loop(latency_s=0.1)
    run(loop, clock, 20)
    robot.fault = "arm 1 over-current"
    assert loop.tick().mode is Mode.FAULT
    seeded = loop.safety.state
    robot.state_stamp = clock() - 5.0
    assert loop.command(Trigger.OPERATOR_ESTOP).accepted and loop.modes.mode is Mode.ESTOP
    assert loop.safety.state is seeded  # not re-seeded from the stale reading: the release will do it


def test_a_robot_fault_is_an_operator_matter() -> None:
    loop, robot, clock = make_loop(latency_s=0.1)
    run(loop, clock, 20)
    robot.fault = "arm 1 over-current"
    result = loop.tick()
    assert result.mode is Mode.FAULT and any(e.trigger is Trigger.ROBOT_FAULT for e in result.events)
    robot.fault = None
    clock.t += loop.period
    assert all(r.mode is Mode.FAULT and r.target is None for r in run(loop, clock, 20))


def test_fail_safe_goes_through_the_mode_table_and_into_the_record() -> None:
    loop, robot, clock = make_loop(latency_s=0.1)
    run(loop, clock, 20)
    result = loop.fail_safe("control tick failed: boom")
    robot.send(result)
    assert loop.modes.mode is Mode.FAULT and loop.executor.plan is None
    assert loop.stats.mode_events[-1].trigger is Trigger.ROBOT_FAULT
    assert "boom" in loop.stats.mode_events[-1].detail
    clock.t += loop.period
    assert loop.tick().events[0].trigger is Trigger.ROBOT_FAULT  # reported with the next tick


def test_teleop_takes_over_and_a_silent_leader_holds() -> None:
    class Leader:
        def __init__(self) -> None:
            self.reading: tuple[float, np.ndarray] | None = None
            self.took_over = 0

        def takeover(self, progress: int, command: np.ndarray) -> None:
            self.took_over += 1

        def read(self) -> tuple[float, np.ndarray] | None:
            return self.reading

    loop, robot, clock = make_loop(latency_s=0.1)
    leader = Leader()
    loop.leader = leader
    run(loop, clock, 20)
    leader.reading = (clock(), robot.position + 0.05)
    assert loop.command(Trigger.OPERATOR_TELEOP).accepted and leader.took_over == 1
    assert loop.executor.plan is None
    result = loop.tick()
    assert result.mode is Mode.TELEOP and result.target is not None and loop.stats.teleop_interventions == 1
    clock.t += 1.0  # the leader's reading is now a second old
    result = loop.tick()
    assert result.target is None and any(e.trigger is Trigger.STALE_INPUT for e in result.events)


def test_homing_slides_to_the_pose_in_an_operator_hold_and_is_not_task_progress() -> None:
    loop, robot, clock = make_loop(latency_s=0.1)
    run(loop, clock, 20)
    loop.command(Trigger.OPERATOR_HOLD)
    limits = loop.safety.limits
    pose = limits.soft_low + 0.4 * (limits.soft_high - limits.soft_low)
    loop.begin_homing(pose, speed_fraction=0.5)
    progress = loop.progress
    for _ in range(2000):
        if not loop.homing:
            break
        result = loop.tick()
        clock.t += loop.period
        assert result.homing
    assert not loop.homing
    np.testing.assert_allclose(robot.position, pose, atol=1e-6)
    assert loop.progress == progress


def test_nominal_interventions_count_only_ticks_executing_a_plan_in_autonomous() -> None:
    loop, _robot, clock = make_loop(latency_s=0.3)
    results = run(loop, clock, 120)
    executing = sum(r.mode is Mode.AUTONOMOUS and r.target is not None for r in results)
    assert 0 < executing < len(results)  # it held while the first plan was on its way
    assert loop.stats.nominal_joint_ticks == 14 * executing
    held_interventions = sum(len(r.result.interventions) for r in results if r.target is None)
    nominal = sum(len(r.result.interventions) for r in results if r.target is not None)
    assert sum(loop.stats.nominal_interventions.values()) == nominal
    assert sum(loop.stats.interventions.values()) == nominal + held_interventions
    loop.command(Trigger.OPERATOR_HOLD)
    before = loop.stats.nominal_joint_ticks
    run(loop, clock, 20)
    assert loop.stats.nominal_joint_ticks == before  # an operator's hold is not nominal motion
