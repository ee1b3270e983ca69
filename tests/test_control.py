"""Mode manager transition table and the receding-horizon plan executor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.control.executor import Plan, PlanExecutor
from eva_runtime.control.modes import TRANSITIONS, Mode, ModeManager, Trigger

# --- modes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", list(Mode))
def test_estop_is_reachable_from_every_mode(start: Mode) -> None:
    manager = ModeManager(start)
    assert manager.handle(Trigger.OPERATOR_ESTOP, 0.0).after is Mode.ESTOP


@pytest.mark.parametrize("trigger", [t for t in Trigger if t is not Trigger.OPERATOR_RELEASE])
def test_estop_is_left_only_by_an_operator_release_into_hold(trigger: Trigger) -> None:
    manager = ModeManager(Mode.ESTOP)
    event = manager.handle(trigger, 1.0)
    assert manager.mode is Mode.ESTOP and (trigger is Trigger.OPERATOR_ESTOP or not event.accepted)
    release = manager.handle(Trigger.OPERATOR_RELEASE, 2.0)
    # The firmware e-stop may have lowered the arm: continue from where it is measured, holding.
    assert release.accepted and manager.mode is Mode.HOLD and release.reseed


def test_fault_needs_an_operator_reset() -> None:
    manager = ModeManager(Mode.AUTONOMOUS)
    manager.handle(Trigger.TRACKING_ERROR, 0.0)
    assert manager.mode is Mode.FAULT
    for trigger in (Trigger.CAUSE_CLEARED, Trigger.OPERATOR_AUTONOMOUS, Trigger.OPERATOR_TELEOP):
        assert not manager.handle(trigger, 1.0).accepted and manager.mode is Mode.FAULT
    assert manager.handle(Trigger.OPERATOR_RESET, 2.0).after is Mode.HOLD


@pytest.mark.parametrize(
    "cause", [Trigger.PLANNER_TIMEOUT, Trigger.PLAN_REJECTED, Trigger.NON_FINITE_PLAN, Trigger.STALE_INPUT]
)
def test_automatic_hold_resumes_when_its_cause_clears(cause: Trigger) -> None:
    manager = ModeManager(Mode.AUTONOMOUS)
    assert manager.handle(cause, 0.0).after is Mode.HOLD
    resumed = manager.handle(Trigger.CAUSE_CLEARED, 1.0)
    # The runtime held its own command: it continues from it rather than re-seeding from the measurement.
    assert resumed.accepted and manager.mode is Mode.AUTONOMOUS and not resumed.reseed


def test_operator_hold_does_not_resume_by_itself() -> None:
    manager = ModeManager(Mode.AUTONOMOUS)
    manager.handle(Trigger.PLANNER_TIMEOUT, 0.0)
    manager.handle(Trigger.OPERATOR_HOLD, 0.5)  # the operator takes over the automatic hold
    assert not manager.handle(Trigger.CAUSE_CLEARED, 1.0).accepted and manager.mode is Mode.HOLD
    assert manager.handle(Trigger.OPERATOR_AUTONOMOUS, 2.0).after is Mode.AUTONOMOUS


def test_the_hold_after_silent_leader_arms_never_hands_the_arms_to_the_planner() -> None:
    manager = ModeManager(Mode.TELEOP)
    assert manager.handle(Trigger.STALE_INPUT, 0.0, "leader arms silent").after is Mode.HOLD
    assert not manager.holding_automatically
    assert not manager.handle(Trigger.CAUSE_CLEARED, 1.0).accepted and manager.mode is Mode.HOLD
    assert manager.handle(Trigger.OPERATOR_TELEOP, 2.0).after is Mode.TELEOP  # the operator decides


@settings(max_examples=300)
@given(st.lists(st.sampled_from(list(Trigger)), max_size=40))
def test_autonomy_starts_only_from_an_operator_or_from_an_automatic_hold_of_autonomy(triggers: list[Trigger]) -> None:
    manager = ModeManager(Mode.HOLD)
    autonomy_interrupted = False  # the last mode that was not HOLD was AUTONOMOUS, and the hold was automatic
    for time, trigger in enumerate(triggers):
        before = manager.mode
        event = manager.handle(trigger, float(time))
        if event.accepted and event.after is Mode.AUTONOMOUS and before is not Mode.AUTONOMOUS:
            assert trigger is Trigger.OPERATOR_AUTONOMOUS or (trigger is Trigger.CAUSE_CLEARED and autonomy_interrupted)
        if event.accepted and event.after is not before:
            autonomy_interrupted = before is Mode.AUTONOMOUS and manager.holding_automatically


def test_teleop_handover_both_ways_continues_from_the_last_command() -> None:
    manager = ModeManager(Mode.AUTONOMOUS)
    to_teleop = manager.handle(Trigger.OPERATOR_TELEOP, 0.0)
    assert to_teleop.after is Mode.TELEOP and not to_teleop.reseed and manager.commands_allowed
    back = manager.handle(Trigger.OPERATOR_AUTONOMOUS, 1.0)
    assert back.after is Mode.AUTONOMOUS and not back.reseed


def test_leaving_a_fault_reseeds_from_the_measured_state() -> None:
    manager = ModeManager(Mode.TELEOP)
    manager.handle(Trigger.ROBOT_FAULT, 0.0)
    assert manager.handle(Trigger.OPERATOR_RESET, 1.0).reseed


def test_an_estop_out_of_a_fault_does_not_reseed_its_release_does() -> None:
    manager = ModeManager(Mode.AUTONOMOUS)
    manager.handle(Trigger.TRACKING_ERROR, 0.0)
    assert not manager.reseeds(Trigger.OPERATOR_ESTOP)
    assert not manager.handle(Trigger.OPERATOR_ESTOP, 1.0).reseed and manager.mode is Mode.ESTOP
    assert manager.handle(Trigger.OPERATOR_RELEASE, 2.0).reseed


def test_every_event_is_recorded_including_refusals() -> None:
    manager = ModeManager(Mode.HOLD)
    manager.handle(Trigger.PLANNER_TIMEOUT, 0.0)  # not meaningful in HOLD: refused
    manager.handle(Trigger.OPERATOR_AUTONOMOUS, 1.0)
    assert [(e.trigger, e.accepted) for e in manager.events] == [
        (Trigger.PLANNER_TIMEOUT, False),
        (Trigger.OPERATOR_AUTONOMOUS, True),
    ]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(list(Trigger)), max_size=40))
def test_random_trigger_sequences_follow_the_table(triggers: list[Trigger]) -> None:
    manager = ModeManager(Mode.HOLD)
    for time, trigger in enumerate(triggers):
        before = manager.mode
        event = manager.handle(trigger, float(time))
        assert event.before is before and manager.mode is event.after
        if event.accepted:
            assert TRANSITIONS[(before, trigger)] is event.after
        else:
            assert event.after is before
        if before is Mode.ESTOP:
            assert manager.mode in (Mode.ESTOP, Mode.HOLD)
            assert manager.mode is Mode.ESTOP or trigger is Trigger.OPERATOR_RELEASE


# --- executor ----------------------------------------------------------------------------------------------------


def ramp_plan(start: float, count: int = 10, fps: float = 10.0, dof: int = 2) -> Plan:
    actions = np.arange(count, dtype=float)[:, None] * np.ones((1, dof))
    return Plan(start_time=start, fps=fps, actions=actions)


def test_plan_interpolates_between_actions() -> None:
    plan = ramp_plan(1.0)
    assert np.allclose(plan.at(1.0), 0.0) and np.allclose(plan.at(1.25), 2.5) and np.allclose(plan.at(9.0), 9.0)


def test_install_drops_the_actions_whose_time_has_passed() -> None:
    executor = PlanExecutor(blend_s=0.0)
    plan = ramp_plan(start=1.0)
    dropped = executor.install(plan, now=1.35, current_command=np.zeros(2))
    assert dropped == 3
    assert np.allclose(executor.target(1.35), 3.5)  # continues where the plan is now, not at its start


def test_junction_is_blended_from_the_current_command() -> None:
    executor = PlanExecutor(blend_s=0.2)
    executor.install(ramp_plan(start=0.0), now=0.5, current_command=np.full(2, -10.0))
    assert np.allclose(executor.target(0.5), -10.0)  # starts exactly at the command being sent
    mid = executor.target(0.6)
    assert np.allclose(mid, 0.5 * -10.0 + 0.5 * 6.0)
    assert np.allclose(executor.target(0.7), 7.0)  # blend over, plan only


def test_target_is_none_past_the_executed_part() -> None:
    executor = PlanExecutor(blend_s=0.0, execute_fraction=0.5)
    executor.install(ramp_plan(start=0.0), now=0.0, current_command=np.zeros(2))
    assert executor.target(0.4) is not None and executor.target(0.46) is None


def test_next_plan_is_requested_before_the_current_one_runs_out() -> None:
    executor = PlanExecutor(blend_s=0.0, replan_margin_s=0.1)
    assert executor.needs_plan(0.0, expected_latency_s=0.3)  # nothing installed
    executor.install(ramp_plan(start=0.0), now=0.0, current_command=np.zeros(2))  # covers 0 .. 0.9 s
    assert not executor.needs_plan(0.4, expected_latency_s=0.3)
    assert executor.needs_plan(0.5, expected_latency_s=0.3)


def test_a_plan_that_arrives_after_its_end_is_refused() -> None:
    with pytest.raises(ValueError, match="before it arrived"):
        PlanExecutor().install(ramp_plan(start=0.0), now=5.0, current_command=np.zeros(2))


@pytest.mark.parametrize(
    ("actions", "message"),
    [(np.full((3, 2), np.nan), "non-finite"), (np.zeros((1, 2)), "at least 2"), (np.zeros(4), "at least 2")],
)
def test_bad_plans_are_rejected(actions: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Plan(start_time=0.0, fps=10.0, actions=actions)


# --- operator keys -----------------------------------------------------------------------------------------------


def test_operator_keys_arrive_in_order_without_blocking_and_labels_are_kept() -> None:
    import io

    from eva_runtime.control.operator_keys import KeyOperator

    operator = KeyOperator(io.StringIO("a\nt h\nz\ns\n"))
    operator.join(5)
    assert [operator(step, 0.0) for step in range(4)] == [
        Trigger.OPERATOR_AUTONOMOUS,
        Trigger.OPERATOR_TELEOP,
        Trigger.OPERATOR_HOLD,
        None,  # nothing pending: the loop goes on
    ]
    assert operator.unknown == ["z"]
    assert operator.take_label() == "success" and operator.take_label() is None


def test_operator_keys_from_a_real_pipe() -> None:
    import os

    from eva_runtime.control.operator_keys import KeyOperator

    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as reader, os.fdopen(write_end, "w") as writer:
        operator = KeyOperator(reader)
        assert operator(0, 0.0) is None  # no key yet, and no wait
        writer.write("e\nx\n")
        writer.flush()
        writer.close()
        operator.join(5)
        assert operator(1, 0.0) is Trigger.OPERATOR_ESTOP and operator.take_label() == "failure"
