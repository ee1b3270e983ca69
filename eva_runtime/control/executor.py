"""Plan executor: receding-horizon playback of timestamped action chunks at the control rate.

A :class:`Plan` is H actions at the planner's fps, action k due at `start_time + k / fps` on the robot clock.
`install` splices a new plan in at the current time: actions whose time has passed while the plan was being
made are dropped (delay compensation), and the junction is blended over `blend_s` seconds so that a plan that
disagrees with the current motion does not produce a step. `needs_plan` says when to ask for the next plan so
that it lands before this one runs out.

Two curves through a plan's actions (`interpolation`):
- ``"bspline"`` (default): the uniform cubic B-spline whose control points are the actions (the first and last
  repeated). It is continuous in position, velocity and acceleration, and every point of it is a convex
  combination of four neighbouring actions, so it never leaves the range of its knots: no overshoot into a joint
  limit, which an interpolating cubic spline cannot promise. The price is a symmetric [1 4 1] / 6 smoothing at
  the knots (no lag). A junction blends from the trajectory being executed (shifted to the command actually sent)
  to the new plan with the quintic smoothstep, whose first and second derivatives vanish at both ends, so the
  commanded velocity and acceleration stay continuous across plans. Optionally (`caps`), the curve is also
  retimed (`control/retiming.py`): played slower, every joint together, where the plan asks for more than the
  caps allow, so the path is kept. It is off by default: with the oracle it cost the task (docs/control.md).
- ``"linear"``: the former executor: straight lines between actions (the velocity jumps at every knot) and a
  linear blend from the command held at the junction. Kept for side-by-side measurement.

With a `GripperLatch`, each plan's gripper columns are made open-or-closed (with hysteresis, from the state being
commanded) before the curve is drawn through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from eva_runtime.control.gripper_latch import GripperLatch
from eva_runtime.control.retiming import TimeMap, retime

__all__ = ["INTERPOLATIONS", "Plan", "PlanExecutor", "bspline_at"]


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


INTERPOLATIONS = ("bspline", "linear")


def bspline_at(actions: np.ndarray, position: float) -> np.ndarray:
    """The uniform cubic B-spline with `actions` as control points (ends repeated) at fractional index `position`
    (clamped to the plan's span)."""
    last = len(actions) - 1
    position = min(max(position, 0.0), float(last))
    segment = min(int(position), last)
    u = position - segment
    rows = [min(max(segment + offset, 0), last) for offset in (-1, 0, 1, 2)]
    u2, u3 = u * u, u * u * u
    weights = np.array([(1.0 - u) ** 3, 3 * u3 - 6 * u2 + 4, -3 * u3 + 3 * u2 + 3 * u + 1, u3]) / 6.0
    return weights @ actions[rows]


def _smoothstep5(fraction: float) -> float:
    """0 -> 1 with zero first and second derivatives at both ends."""
    s = min(max(fraction, 0.0), 1.0)
    return s * s * s * (10.0 + s * (-15.0 + 6.0 * s))


@dataclass(frozen=True)
class _Trajectory:
    """What the executor commands over time: a plan's curve, blended in from the trajectory it replaced."""

    plan: Plan | None  # None: hold `offset` (the command sent when the first plan arrived)
    interpolation: str
    start: float = 0.0  # the junction time
    blend_s: float = 0.0
    previous: _Trajectory | None = None
    offset: np.ndarray | None = None  # added to `previous` (or held, without a plan) so the junction has no step
    timing: TimeMap | None = None  # the retimed playback of the plan's curve (None: at the planner's rate)

    def own(self, time: float) -> np.ndarray:
        assert self.plan is not None
        elapsed = time - self.plan.start_time
        position = self.timing.index_at(elapsed) if self.timing is not None else elapsed * self.plan.fps
        return bspline_at(self.plan.actions, position) if self.interpolation == "bspline" else self.plan.at(time)

    def at(self, time: float) -> np.ndarray:
        if self.plan is None:
            return self.offset
        if self.previous is None or self.blend_s <= 0 or time >= self.start + self.blend_s:
            return self.own(time)
        fraction = (time - self.start) / self.blend_s
        weight = _smoothstep5(fraction) if self.interpolation == "bspline" else min(max(fraction, 0.0), 1.0)
        return (1.0 - weight) * (self.previous.at(time) + self.offset) + weight * self.own(time)

    def settled(self, time: float) -> _Trajectory:
        """The same trajectory from `time` on, without the history it no longer reads (keeps the chain short)."""
        if self.previous is not None and time >= self.start + self.blend_s:
            return _Trajectory(self.plan, self.interpolation, timing=self.timing)
        if self.previous is not None:
            previous = self.previous.settled(time)
            return _Trajectory(
                self.plan, self.interpolation, self.start, self.blend_s, previous, self.offset, self.timing
            )
        return self


class PlanExecutor:
    def __init__(
        self,
        blend_s: float = 0.2,
        replan_margin_s: float = 0.1,
        execute_fraction: float = 1.0,
        interpolation: str = "bspline",
        caps: tuple[np.ndarray, np.ndarray] | None = None,
        headroom: float = 0.8,
        gripper_latch: GripperLatch | None = None,
    ) -> None:
        """`caps`: the joints' (velocity_max, acceleration_max) in the actions' units; with the B-spline curve, each
        plan is retimed to stay within `headroom` of them (None: played at the planner's rate). `gripper_latch`:
        grippers open or closed with hysteresis instead of the decoded openings (None: as decoded)."""
        if blend_s < 0 or replan_margin_s < 0 or not 0 < execute_fraction <= 1:
            raise ValueError("blend_s and replan_margin_s must be >= 0 and execute_fraction in (0, 1]")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.blend_s = blend_s
        self.replan_margin_s = replan_margin_s
        self.execute_fraction = execute_fraction
        self.interpolation = interpolation
        self.caps = caps
        self.headroom = headroom
        self.gripper_latch = gripper_latch
        self._trajectory: _Trajectory | None = None
        self.dropped_actions = 0  # total actions skipped by delay compensation, for the log

    @property
    def plan(self) -> Plan | None:
        return self._trajectory.plan if self._trajectory is not None else None

    def install(self, plan: Plan, now: float, current_command: np.ndarray) -> int:
        """Splice `plan` in at `now`; returns how many of its actions were already due (dropped)."""
        if now >= plan.end_time:
            raise ValueError(f"plan ended at {plan.end_time:.3f} s, before it arrived at {now:.3f} s")
        if self.gripper_latch is not None:
            plan = replace(plan, actions=self.gripper_latch.apply(plan.actions, current_command))
        timing = None
        if self.caps is not None and self.interpolation == "bspline":
            timing = retime(plan.actions, plan.fps, *self.caps, headroom=self.headroom)
        elapsed = max(now - plan.start_time, 0.0)
        dropped = int(np.floor(timing.index_at(elapsed) if timing is not None else elapsed * plan.fps))
        sent = np.array(current_command, dtype=np.float64, copy=True)
        current = self._trajectory
        if self.interpolation == "bspline" and current is not None and now <= self.usable_until:
            previous = current.settled(now)
            offset = sent - previous.at(now)  # the filter may have changed what was sent: start from that
        else:
            previous, offset = _Trajectory(None, self.interpolation, offset=sent), np.zeros_like(sent)
        self._trajectory = _Trajectory(plan, self.interpolation, now, self.blend_s, previous, offset, timing)
        self.dropped_actions += dropped
        return dropped

    def clear(self) -> None:
        self._trajectory = None

    @property
    def usable_until(self) -> float:
        """Time after which this plan is no longer executed (receding horizon: only its first part). Nominal, also
        for a retimed plan: a slowed plan is replaced on the same schedule, only less of it is executed, and it is
        never played past the age at which the safety filter calls a plan stale."""
        if self.plan is None:
            return -np.inf
        return self.plan.start_time + self.execute_fraction * (self.plan.end_time - self.plan.start_time)

    def target(self, now: float) -> np.ndarray | None:
        """The command for `now`, or None when there is no plan covering it (the caller holds)."""
        if self._trajectory is None or now > self.usable_until:
            return None
        return self._trajectory.at(now)

    def needs_plan(self, now: float, expected_latency_s: float) -> bool:
        """Ask for the next plan when the current one would run out before a new one can arrive."""
        return now + expected_latency_s + self.replan_margin_s >= self.usable_until
