"""Path-preserving retiming of a plan's curve: slow the playback where the plan asks for more than the joints may
do, so the executor's command stays inside the velocity and acceleration caps and the safety filter stays a net.

A plan's curve is the uniform cubic B-spline p(u) through its actions, with u the fractional action index. Played
at the planner's rate, u = fps * t. Retiming keeps the curve (the same path through joint space, every joint
together) and changes only how fast u advances: u' = du/dt <= fps. In real time

    velocity     = p'(u) u'
    acceleration = p''(u) u'^2 + p'(u) u''

so on a grid of u the rate is capped where any joint would pass `headroom` x its velocity cap, or its acceleration
cap through the first term. Then a forward and a backward pass bound how fast u'^2 may change along u (that is
u''), so the second term stays within the rest of the acceleration cap. This is the speed profile of time-optimal
path parametrisation, simplified: one rate bound per grid point, no switching-point search. Where a plan is
within the caps, the map is exactly u = fps * t and nothing changes.

Why not clamp each joint instead (which is what the safety filter does): a clamped joint lags the others, so the
arm leaves the plan's path, e.g. the arm moves on while the gripper is still closing. Retimed, the arm waits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TimeMap", "bspline_derivatives", "retime"]

_TINY = 1e-12


@dataclass(frozen=True)
class TimeMap:
    """Seconds since the plan's start -> fractional action index. Between grid points u'' is constant (u'^2 is
    linear in u there), so u(t) is a quadratic in t on each interval and u' is continuous: the commanded velocity
    has no kinks, only the acceleration steps, within its cap."""

    times: np.ndarray  # (N,) increasing, times[0] = 0
    indices: np.ndarray  # (N,) increasing from 0 to H - 1
    rates: np.ndarray  # (N,) du/dt at each grid point

    @classmethod
    def uniform(cls, count: int, fps: float) -> TimeMap:
        last = float(count - 1)
        return cls(np.array([0.0, last / fps]), np.array([0.0, last]), np.array([fps, fps]))

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def index_at(self, elapsed: float) -> float:
        """The curve's parameter `elapsed` seconds after the plan's start (clamped to the plan's span)."""
        if elapsed <= 0.0:
            return float(self.indices[0])
        if elapsed >= self.times[-1]:
            return float(self.indices[-1])
        i = int(np.searchsorted(self.times, elapsed, side="right")) - 1
        tau = elapsed - self.times[i]
        span = self.indices[i + 1] - self.indices[i]
        acceleration = (self.rates[i + 1] ** 2 - self.rates[i] ** 2) / (2.0 * span)
        return float(min(self.indices[i] + self.rates[i] * tau + 0.5 * acceleration * tau * tau, self.indices[i + 1]))


def bspline_derivatives(actions: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivatives with respect to the index of the uniform cubic B-spline through `actions`
    (ends repeated, as `executor.bspline_at`) at each of `positions`; both (len(positions), dof)."""
    last = len(actions) - 1
    positions = np.clip(np.asarray(positions, dtype=np.float64), 0.0, float(last))
    segments = np.minimum(positions.astype(int), last)
    u = (positions - segments)[:, None]
    rows = np.clip(segments[:, None] + np.arange(-1, 3)[None, :], 0, last)  # (N, 4)
    first = np.concatenate([-3 * (1 - u) ** 2, 9 * u**2 - 12 * u, -9 * u**2 + 6 * u + 3, 3 * u**2], axis=1) / 6.0
    second = np.concatenate([6 * (1 - u), 18 * u - 12, -18 * u + 6, 6 * u], axis=1)
    second = second / 6.0
    points = actions[rows]  # (N, 4, dof)
    return np.einsum("nk,nkd->nd", first, points), np.einsum("nk,nkd->nd", second, points)


def retime(
    actions: np.ndarray,
    fps: float,
    velocity_max: np.ndarray,
    acceleration_max: np.ndarray,
    headroom: float = 0.8,
    samples_per_action: int = 8,
) -> TimeMap:
    """The slowest-where-needed time map of the plan's B-spline: every joint's velocity within `headroom` x its
    cap, and its acceleration within its cap (`headroom` of it for the curve's bend, the rest for the change of
    pace). Caps are per joint, in the actions' units; a joint with an infinite cap never slows the plan."""
    if not 0.0 < headroom <= 1.0:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    count = len(actions)
    grid = np.linspace(0.0, count - 1.0, (count - 1) * samples_per_action + 1)
    slope, bend = bspline_derivatives(np.asarray(actions, dtype=np.float64), grid)
    velocity_cap, acceleration_cap = np.asarray(velocity_max, float), np.asarray(acceleration_max, float)
    with np.errstate(divide="ignore"):
        by_velocity = np.min(headroom * velocity_cap / np.maximum(np.abs(slope), _TINY), axis=1)
        by_bend = np.min(np.sqrt(headroom * acceleration_cap / np.maximum(np.abs(bend), _TINY)), axis=1)
    rate = np.minimum(fps, np.minimum(by_velocity, by_bend))
    if np.all(rate >= fps):
        return TimeMap.uniform(count, fps)
    # |p'| |u''| <= (1 - headroom) a_max with u'' = u' du'/du: a bound on how fast the rate may change along u.
    spare = (1.0 - headroom) * acceleration_cap
    with np.errstate(divide="ignore"):
        change = np.min(spare / np.maximum(np.abs(slope), _TINY), axis=1)  # bound on u' du'/du
    step = grid[1] - grid[0]
    growth = 2.0 * step * np.minimum(change[1:], change[:-1])  # bound on the change of u'^2 over each interval
    squared = _limit_growth(rate**2, growth)
    squared = _limit_growth(squared[::-1], growth[::-1])[::-1]  # and when slowing down ahead of a hard part
    rate = np.sqrt(np.maximum(squared, _TINY))
    # u'' is constant on each interval, so it takes du / (mean rate) seconds.
    times = np.concatenate([[0.0], np.cumsum(2.0 * step / (rate[1:] + rate[:-1]))])
    return TimeMap(times, grid, rate)


def _limit_growth(bound: np.ndarray, growth: np.ndarray) -> np.ndarray:
    """The largest x <= bound with x[i] <= x[i-1] + growth[i-1]: x[i] = min over k <= i of bound[k] plus the growth
    from k to i, i.e. C[i] + running-min(bound - C) with C the cumulative growth (one vectorised pass)."""
    cumulative = np.concatenate([[0.0], np.cumsum(growth)])
    return cumulative + np.minimum.accumulate(bound - cumulative)
