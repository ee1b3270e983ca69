"""What one episode's control loop counted (plans, rejections, holds, interventions, latencies, modes) and the
outcome log's counters made from it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from eva_runtime.records.outcome_fields import TRACKER_PREFIX

__all__ = ["EpisodeStats", "episode_counters"]


@dataclass
class EpisodeStats:
    success: bool = False
    stage: int | None = None  # how many of the task's stages the episode reached (robot.furthest_stage)
    closest_reach_m: float | None = None  # the gripper's closest approach to the object (robot.closest_reach_m)
    steps: int = 0
    plans: int = 0
    rejected: int = 0
    expired_plans: int = 0  # answers that arrived after their plan's last action (a planner slower than its horizon)
    planner_faults: int = 0
    dropped_actions: int = 0
    overruns: int = 0
    hold_ticks: int = 0
    latencies_s: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    executed_scores: list[float] = field(default_factory=list)  # reward of executed-command windows (executed_score)
    interventions: Counter = field(default_factory=Counter)
    # The same, only on ticks executing a plan in AUTONOMOUS (not holds, estops, homing or teleop): the filter
    # reshaping nominal motion, which a smooth executor should make rare.
    nominal_interventions: Counter = field(default_factory=Counter)
    nominal_joint_ticks: int = 0
    # What the executor's cap tracker changed on those ticks, before the filter (cap_tracker.py): shaping, not safety.
    tracker_changes: Counter = field(default_factory=Counter)
    mode_events: list = field(default_factory=list)
    max_step_change: float = 0.0  # largest |command(t) - command(t-1)| seen, rad
    teleop_interventions: int = 0
    teleop_ticks: int = 0
    periods_s: list[float] = field(default_factory=list)  # monotonic time between tick starts (paced runs)
    work_s: list[float] = field(default_factory=list)  # time spent working in each tick
    first_command_s: float | None = None  # first plan request (a camera frame) to the first planned command
    plan_age_s: float = float("nan")  # age of the plan being executed (its observation's time to now)


def episode_counters(stats: EpisodeStats, control_period_s: float) -> dict:
    """The outcome log's counters (`OutcomeLog.update_episode` / `end_episode` keywords) from loop statistics."""
    latencies = np.array(stats.latencies_s) * 1e3
    scores = np.array(stats.scores)
    counters: dict = {
        "safety_interventions": dict(stats.interventions),
        "nominal_interventions": {
            "joint_ticks": stats.nominal_joint_ticks,
            **stats.nominal_interventions,
            **{TRACKER_PREFIX + check: count for check, count in stats.tracker_changes.items()},
        },
        "teleop_interventions": stats.teleop_interventions,
        "teleop_seconds": stats.teleop_ticks * control_period_s,
    }
    if latencies.size:
        counters["planning_latency_ms"] = {
            "count": int(latencies.size),
            "mean": float(latencies.mean()),
            "p50": float(np.percentile(latencies, 50)),
            "p95": float(np.percentile(latencies, 95)),
            "max": float(latencies.max()),
        }
    if scores.size:
        counters["executability"] = {
            "count": int(scores.size),
            "mean": float(scores.mean()),
            "min": float(scores.min()),
            "rejected": int(stats.rejected),
            "expired": int(stats.expired_plans),
        }
    if stats.executed_scores:  # what reached the arms, scored in plan-length windows: beside the plans' own scores
        executed = np.array(stats.executed_scores)
        no_plans = {"count": 0, "mean": None, "min": None, "rejected": int(stats.rejected), "expired": 0}
        counters.setdefault("executability", no_plans).update(
            {"executed_count": int(executed.size), "executed_mean": float(executed.mean())}
        )
    return counters
