"""Plan executor: receding-horizon playback of timestamped action chunks at the control rate.

A :class:`Plan` is H actions at the planner's fps, action k due at `start_time + k / fps` on the robot clock.
`install` splices a new plan in at the current time: actions whose time has passed while the plan was being
made are dropped (delay compensation), and the junction is blended from the command being sent now to the plan
over `blend_s` seconds, so a plan that disagrees with the current motion does not produce a step (the safety
filter bounds whatever remains). Between actions the target is interpolated linearly. `needs_plan` says when to
ask for the next plan so that it lands before this one runs out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Plan", "PlanExecutor"]


@dataclass(frozen=True)
class Plan:
    start_time: float  # robot-clock time of action 0 (the observation the plan was made from)
    fps: float
    actions: np.ndarray  # (H, dof)
    model_id: str = ""
    score: float = float("nan")  # executability reward of the decoded actions
    latency_s: float = float("nan")  # observation to plan available
    attempts: int = 1
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.actions.ndim != 2 or len(self.actions) < 2:
            raise ValueError(f"a plan needs at least 2 actions of shape (H, dof), got {self.actions.shape}")
        if not np.all(np.isfinite(self.actions)):
            raise ValueError("plan contains non-finite actions")
        if not self.fps > 0:
            raise ValueError(f"plan fps must be positive, got {self.fps}")

    @property
    def end_time(self) -> float:
        return self.start_time + (len(self.actions) - 1) / self.fps

    def at(self, time: float) -> np.ndarray:
        """Linear interpolation between the actions around `time` (clamped to the plan's span)."""
        position = float(np.clip((time - self.start_time) * self.fps, 0.0, len(self.actions) - 1))
        low = int(position)
        high = min(low + 1, len(self.actions) - 1)
        fraction = position - low
        return (1.0 - fraction) * self.actions[low] + fraction * self.actions[high]


class PlanExecutor:
    def __init__(self, blend_s: float = 0.2, replan_margin_s: float = 0.1, execute_fraction: float = 1.0) -> None:
        if blend_s < 0 or replan_margin_s < 0 or not 0 < execute_fraction <= 1:
            raise ValueError("blend_s and replan_margin_s must be >= 0 and execute_fraction in (0, 1]")
        self.blend_s = blend_s
        self.replan_margin_s = replan_margin_s
        self.execute_fraction = execute_fraction
        self.plan: Plan | None = None
        self._blend_from: np.ndarray | None = None
        self._installed_at = 0.0
        self.dropped_actions = 0  # total actions skipped by delay compensation, for the log

    def install(self, plan: Plan, now: float, current_command: np.ndarray) -> int:
        """Splice `plan` in at `now`; returns how many of its actions were already due (dropped)."""
        if now >= plan.end_time:
            raise ValueError(f"plan ended at {plan.end_time:.3f} s, before it arrived at {now:.3f} s")
        dropped = int(np.floor((now - plan.start_time) * plan.fps)) if now > plan.start_time else 0
        self.plan = plan
        self._blend_from = np.array(current_command, dtype=np.float64, copy=True)
        self._installed_at = now
        self.dropped_actions += dropped
        return dropped

    def clear(self) -> None:
        self.plan = None
        self._blend_from = None

    @property
    def usable_until(self) -> float:
        """Time after which this plan is no longer executed (receding horizon: only its first part)."""
        if self.plan is None:
            return -np.inf
        return self.plan.start_time + self.execute_fraction * (self.plan.end_time - self.plan.start_time)

    def target(self, now: float) -> np.ndarray | None:
        """The command for `now`, or None when there is no plan covering it (the caller holds)."""
        if self.plan is None or now > self.usable_until:
            return None
        planned = self.plan.at(now)
        if self.blend_s > 0 and now < self._installed_at + self.blend_s:
            weight = (now - self._installed_at) / self.blend_s
            return (1.0 - weight) * self._blend_from + weight * planned
        return planned

    def needs_plan(self, now: float, expected_latency_s: float) -> bool:
        """Ask for the next plan when the current one would run out before a new one can arrive."""
        return now + expected_latency_s + self.replan_margin_s >= self.usable_until
