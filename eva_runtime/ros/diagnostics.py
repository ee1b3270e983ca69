"""The policy node's `/diagnostics`: one DiagnosticStatus per concern, built from a plain snapshot of the runtime.

Concerns (status names start with the node name so `rqt_robot_monitor` groups them): planner (alive, plan age,
latency), cameras (frame ages), safety filter (intervention counts per check), robot (mode, joint-state ages,
fault), inputs (refused malformed messages per topic) and control loop (tick period, overruns). Levels: ERROR
for what stops the robot and needs an operator (planner process gone, ESTOP, FAULT), WARN for what makes the
runtime hold by itself (stale input, refused messages since the last report), OK otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from eva_runtime.ros.messages import seconds_to_stamp

__all__ = ["PolicySnapshot", "build_diagnostics"]

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


@dataclass(frozen=True)
class PolicySnapshot:
    stamp: float
    hardware_id: str
    mode: str
    lifecycle: str
    homing: bool
    planner_alive: bool
    planner_ready: bool
    model_id: str
    plans: int
    rejected: int
    planner_faults: int
    plan_age_s: float
    latency_last_s: float
    latency_p50_s: float
    frame_ages_s: Mapping[str, float]
    frame_timeout_s: float
    state_ages_s: Mapping[str, float]
    state_timeout_s: float
    fault: str | None
    interventions: Mapping[str, int]
    rejected_messages: Mapping[str, int]
    new_rejections: int  # refused since the previous report
    last_rejection: Mapping[str, str]
    tick_period_p50_s: float
    tick_period_max_s: float
    overruns: int
    teleop_unavailable: str | None = None
    episode_id: int | None = None
    held_command_failures: int = 0  # last commands not kept for a restart (control/held_command.py)
    held_command_error: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    expired_plans: int = 0  # answers that came after their plan's last action


def _value(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def _status(name: str, level: bytes, message: str, hardware_id: str, values: Mapping[str, object]) -> DiagnosticStatus:
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=key, value=_value(value)) for key, value in values.items()]
    return status


def build_diagnostics(node_name: str, s: PolicySnapshot) -> DiagnosticArray:
    """One status per concern, always in this order, stamped with the snapshot's time."""
    statuses = [
        _planner_status(node_name, s),
        _cameras_status(node_name, s),
        _safety_status(node_name, s),
        _robot_status(node_name, s),
        _inputs_status(node_name, s),
        _control_loop_status(node_name, s),
    ]
    array = DiagnosticArray()
    array.header.stamp = seconds_to_stamp(s.stamp)
    array.status = statuses
    return array


def _planner_status(node_name: str, s: PolicySnapshot) -> DiagnosticStatus:
    """ERROR without a planner process, WARN while it starts or an autonomous robot waits for a plan."""
    if not s.planner_alive:
        level, message = ERROR, "planner process is not running"
    elif not s.planner_ready:
        level, message = WARN, "planner process is starting"
    elif s.mode == "autonomous" and not s.plan_age_s <= 2 * max(s.latency_p50_s, 1.0):
        level, message = WARN, "waiting for a plan"
    elif s.mode == "hold" and s.expired_plans and s.plans == 0:
        level, message = WARN, "plans arrive after their last action (planner slower than its horizon)"
    else:
        level, message = OK, "planning"
    return _status(
        f"{node_name}: planner",
        level,
        message,
        s.hardware_id,
        {
            "model_id": s.model_id,
            "plans": s.plans,
            "rejected": s.rejected,
            "expired_plans": s.expired_plans,
            "planner_faults": s.planner_faults,
            "plan_age_s": s.plan_age_s,
            "latency_last_s": s.latency_last_s,
            "latency_p50_s": s.latency_p50_s,
        },
    )


def _cameras_status(node_name: str, s: PolicySnapshot) -> DiagnosticStatus:
    """WARN naming every camera whose last frame is older than the timeout."""
    stale = sorted(name for name, age in s.frame_ages_s.items() if not age <= s.frame_timeout_s)
    return _status(
        f"{node_name}: cameras",
        WARN if stale else OK,
        f"stale: {', '.join(stale)}" if stale else "fresh",
        s.hardware_id,
        {f"{name}_age_s": age for name, age in s.frame_ages_s.items()} | {"timeout_s": s.frame_timeout_s},
    )


def _safety_status(node_name: str, s: PolicySnapshot) -> DiagnosticStatus:
    """ERROR with the latched fault, else the intervention count; values are the counts per check."""
    total = sum(s.interventions.values())
    return _status(
        f"{node_name}: safety filter",
        ERROR if s.fault else OK,
        s.fault or f"{total} interventions",
        s.hardware_id,
        dict(sorted(s.interventions.items())),
    )


def _robot_status(node_name: str, s: PolicySnapshot) -> DiagnosticStatus:
    """ERROR in ESTOP or FAULT (an operator must act), WARN while a joint state is stale."""
    stale_arms = sorted(arm for arm, age in s.state_ages_s.items() if not age <= s.state_timeout_s)
    if s.mode in ("estop", "fault"):
        level, message = ERROR, f"{s.mode.upper()}: an operator must release or reset"
    elif stale_arms:
        level, message = WARN, f"joint state stale: {', '.join(stale_arms)}"
    else:
        level, message = OK, f"{s.mode}{' (homing)' if s.homing else ''}"
    robot_values: dict[str, object] = {"mode": s.mode, "lifecycle": s.lifecycle, "homing": s.homing}
    robot_values |= {f"{arm}_state_age_s": age for arm, age in s.state_ages_s.items()}
    robot_values |= {"fault": s.fault or "", "episode_id": "" if s.episode_id is None else s.episode_id}
    robot_values |= {"teleop": s.teleop_unavailable or "available"}
    return _status(f"{node_name}: robot", level, message, s.hardware_id, robot_values)


def _inputs_status(node_name: str, s: PolicySnapshot) -> DiagnosticStatus:
    """WARN when messages were refused since the previous report; values are counts and last reason per topic."""
    refused = sum(s.rejected_messages.values())
    return _status(
        f"{node_name}: inputs",
        WARN if s.new_rejections else OK,
        f"{refused} malformed messages refused" if refused else "all messages valid",
        s.hardware_id,
        {f"rejected {topic}": count for topic, count in sorted(s.rejected_messages.items())}
        | {f"last {topic}": why for topic, why in sorted(s.last_rejection.items())},
    )


def _control_loop_status(node_name: str, s: PolicySnapshot) -> DiagnosticStatus:
    """Tick period and overrun count, for the operator to read; WARN once the held command could not be kept (a
    restart would then seed the grippers from their reading and could open a grip)."""
    values = {"period_p50_s": s.tick_period_p50_s, "period_max_s": s.tick_period_max_s, "overruns": s.overruns}
    values["held_command_failures"] = s.held_command_failures
    if s.held_command_failures:
        values["held_command_error"] = s.held_command_error
        message = f"{s.overruns} overruns; held command not kept {s.held_command_failures} times"
        return _status(f"{node_name}: control loop", WARN, message, s.hardware_id, values)
    return _status(f"{node_name}: control loop", OK, f"{s.overruns} overruns", s.hardware_id, values)
