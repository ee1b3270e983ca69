"""Mode manager: AUTONOMOUS, TELEOP, HOLD, ESTOP, FAULT and the explicit table of what may change them.

Every change goes through :meth:`ModeManager.handle` with a trigger; the result is a :class:`ModeEvent` for the
episode log whether the change happened or was refused. Rules a robot operator relies on:
- ESTOP is reachable from every mode and left only by an operator release, which lands in HOLD, never moving;
- FAULT (tracking error, robot fault status) is left only by an operator reset, also into HOLD;
- an automatic HOLD (planner timeout, stale input, non-finite plan, rejected plans) returns to AUTONOMOUS by
  itself when its cause clears; an operator's HOLD never does, and neither does the HOLD that ends TELEOP when
  the leader arms go silent: the operator let go, so only the operator says what comes next;
- handovers between AUTONOMOUS, TELEOP and HOLD continue from the filter's last command (the new commander's
  targets start there: teleop slides, the executor blends); leaving ESTOP or FAULT re-seeds the arm joints from
  the measured state (`reseed` in the event), because the arm may have moved outside the command stream; grippers
  keep their last command (`SafetyFilter.reseed`). An ESTOP out of FAULT does not re-seed: it keeps holding, and
  its release re-seeds once the reading is fresh and the arm at rest (control/reseed_check.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["TRANSITIONS", "Mode", "ModeEvent", "ModeManager", "Trigger"]


class Mode(StrEnum):
    AUTONOMOUS = "autonomous"
    TELEOP = "teleop"
    HOLD = "hold"
    ESTOP = "estop"
    FAULT = "fault"


class Trigger(StrEnum):
    OPERATOR_AUTONOMOUS = "operator_autonomous"
    OPERATOR_TELEOP = "operator_teleop"
    OPERATOR_HOLD = "operator_hold"
    OPERATOR_ESTOP = "operator_estop"
    OPERATOR_RELEASE = "operator_release"  # releases an ESTOP
    OPERATOR_RESET = "operator_reset"  # clears a FAULT
    PLANNER_TIMEOUT = "planner_timeout"
    PLAN_REJECTED = "plan_rejected"  # executability below threshold after the resample budget
    NON_FINITE_PLAN = "non_finite_plan"
    STALE_INPUT = "stale_input"
    CAUSE_CLEARED = "cause_cleared"  # the reason for an automatic HOLD went away
    TRACKING_ERROR = "tracking_error"
    ROBOT_FAULT = "robot_fault"


_AUTOMATIC_HOLD = (Trigger.PLANNER_TIMEOUT, Trigger.PLAN_REJECTED, Trigger.NON_FINITE_PLAN, Trigger.STALE_INPUT)
_FAULTS = (Trigger.TRACKING_ERROR, Trigger.ROBOT_FAULT)


def _table() -> dict[tuple[Mode, Trigger], Mode]:
    table: dict[tuple[Mode, Trigger], Mode] = {}
    for mode in Mode:
        table[(mode, Trigger.OPERATOR_ESTOP)] = Mode.ESTOP
    for mode in (Mode.AUTONOMOUS, Mode.TELEOP, Mode.HOLD):
        for trigger in _FAULTS:
            table[(mode, trigger)] = Mode.FAULT
        table[(mode, Trigger.OPERATOR_HOLD)] = Mode.HOLD
    for trigger in _AUTOMATIC_HOLD:
        table[(Mode.AUTONOMOUS, trigger)] = Mode.HOLD
    table[(Mode.TELEOP, Trigger.STALE_INPUT)] = Mode.HOLD  # the leader arms stopped reporting
    table[(Mode.HOLD, Trigger.OPERATOR_AUTONOMOUS)] = Mode.AUTONOMOUS
    table[(Mode.HOLD, Trigger.OPERATOR_TELEOP)] = Mode.TELEOP
    table[(Mode.TELEOP, Trigger.OPERATOR_AUTONOMOUS)] = Mode.AUTONOMOUS
    table[(Mode.AUTONOMOUS, Trigger.OPERATOR_TELEOP)] = Mode.TELEOP
    table[(Mode.HOLD, Trigger.CAUSE_CLEARED)] = Mode.AUTONOMOUS  # only for an automatic hold (see handle)
    table[(Mode.ESTOP, Trigger.OPERATOR_RELEASE)] = Mode.HOLD
    table[(Mode.FAULT, Trigger.OPERATOR_RESET)] = Mode.HOLD
    return table


TRANSITIONS = _table()


def _reseeds(before: Mode, after: Mode) -> bool:
    # FAULT -> ESTOP keeps holding the fault's command: the release out of ESTOP re-seeds, once the arm is at rest.
    return before in (Mode.ESTOP, Mode.FAULT) and after not in (before, Mode.ESTOP)


@dataclass(frozen=True)
class ModeEvent:
    time: float
    trigger: Trigger
    before: Mode
    after: Mode
    accepted: bool
    reseed: bool  # the safety filter must be re-seeded from the measured state before the next command
    detail: str = ""


class ModeManager:
    def __init__(self, initial: Mode = Mode.HOLD) -> None:
        self.mode = initial
        self._automatic_hold = False
        self.events: list[ModeEvent] = []

    @property
    def holding_automatically(self) -> bool:
        """In a HOLD the runtime entered by itself (and may leave by itself when the cause clears)."""
        return self.mode is Mode.HOLD and self._automatic_hold

    @property
    def commands_allowed(self) -> bool:
        """Whether a non-hold target may be sent at all (AUTONOMOUS plans or TELEOP leader commands)."""
        return self.mode in (Mode.AUTONOMOUS, Mode.TELEOP)

    def refuse(self, trigger: Trigger, time: float, detail: str) -> ModeEvent:
        """Record a trigger the table would allow but the runtime refuses now (e.g. autonomy on stale inputs)."""
        event = ModeEvent(time, trigger, self.mode, self.mode, False, False, detail)
        self.events.append(event)
        return event

    def reseeds(self, trigger: Trigger | None) -> bool:
        """Whether `trigger` would be taken now and re-seed the safety filter (it leaves ESTOP or FAULT)."""
        after = TRANSITIONS.get((self.mode, trigger)) if trigger is not None else None
        return after is not None and _reseeds(self.mode, after)

    def handle(self, trigger: Trigger, time: float, detail: str = "") -> ModeEvent:
        before = self.mode
        after = TRANSITIONS.get((before, trigger))
        if trigger is Trigger.CAUSE_CLEARED and not self._automatic_hold:
            after = None  # an operator's hold is the operator's to end
        if after is None:
            event = ModeEvent(time, trigger, before, before, False, False, detail or f"not allowed in {before}")
        else:
            self.mode = after
            # Automatic only when it interrupted autonomy: a hold out of TELEOP must not hand the arms to the
            # planner once a plan arrives (bench/ros_chaos.py found it doing so after the leader arms went quiet).
            self._automatic_hold = after is Mode.HOLD and trigger in _AUTOMATIC_HOLD and before is Mode.AUTONOMOUS
            # Re-seed from the measured state only when the arm may have moved outside this runtime's command
            # stream: leaving ESTOP (the firmware lowers the arm) or FAULT. Between AUTONOMOUS, TELEOP and HOLD
            # every command went through the filter, so its last command is the true starting point; re-seeding
            # there would step the command by the tracking error of a moving arm, the jump a handover must avoid.
            event = ModeEvent(time, trigger, before, after, True, _reseeds(before, after), detail)
        self.events.append(event)
        return event
