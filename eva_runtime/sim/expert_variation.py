"""Varied demonstrations: the scripted expert with its timing warped and its grasps first missed, then corrected
(some after closing on the miss and opening again).

A world model trained on the nominal script learns *when* the hand closes rather than *where*: every
demonstration arrives at the cube and closes at the same instant of the episode, always centred. In closed loop
the arm runs late (plan latency, the safety filter's caps) and ends a centimetre or two off, and the learned
model's hand closes on the demonstrations' schedule, short of the cube (docs/world_model.md, "Where the grasp is
lost"). Demonstrations whose timing varies, and in some of which a hand arrives off the object and moves onto it
before closing, tie the closing to what the frames show, and show the correction the closed loop needs. The
learned model's commonest failure after that is a hand that closes beside the cube and never lifts it (30 of 50
episodes touched the cube without lifting it, docs/world_model.md): a demonstration whose hand closes on its
miss, opens again and then moves onto the cube shows the way out of that state. (DART,
Laskey et al. 2017, perturbs the supervisor for the same reason; here the perturbation is part of the script, so
every demonstration is still the expert's and is still judged by the task's success check.)

A variation is deterministic per episode seed (`rng`), so `eva sim record` with the same variation and seeds
regenerates the same data. Steps here are the script's 50 Hz ticks (`make_expert` scales them afterwards).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = ["ExpertVariation"]

SCRIPT_STEPS = 400  # every script ends by its 400th 50 Hz tick (the episode length)
WARP_SPAN = 50  # ticks per independently timed span of the script
_VARIED_GRASPS = {"transfer_cube": (("right", 1), ("left", 2))}  # (arm, waypoint arriving at the object)


@dataclass(frozen=True)
class ExpertVariation:
    """`timing`: each 50-tick span of the script lasts U(1 - timing, 1 + timing) of its nominal time, rescaled so
    the script still ends when it did. `miss_m`: a grasp first arrives U(0.5, 1) x miss_m off the object, across
    its approach, then moves onto it and closes on the original schedule; `miss_share` of the grasps do.
    `regrasp_share`: of the missed grasps, the share whose hand first closes where it missed and opens again."""

    timing: float = 0.0
    miss_m: float = 0.0
    miss_share: float = 0.5
    regrasp_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.timing < 1.0:
            raise ValueError(f"timing must be in [0, 1), got {self.timing}")
        if not 0.0 <= self.miss_m <= 0.05:
            raise ValueError(f"miss_m must be in [0, 0.05] m, got {self.miss_m}")
        if not 0.0 <= self.miss_share <= 1.0:
            raise ValueError(f"miss_share must be in [0, 1], got {self.miss_share}")
        if not 0.0 <= self.regrasp_share <= 1.0:
            raise ValueError(f"regrasp_share must be in [0, 1], got {self.regrasp_share}")

    @property
    def active(self) -> bool:
        return self.timing > 0.0 or (self.miss_m > 0.0 and self.miss_share > 0.0)

    def as_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def rng(seed: int) -> np.random.Generator:
        """The episode's own stream (independent of the simulation's seeding of the scene)."""
        return np.random.default_rng((int(seed), 0xE7A))

    def apply(self, expert, task: str, rng: np.random.Generator) -> None:
        """Rewrite `expert`'s waypoints in place (before `make_expert` scales them to the control rate)."""
        if self.miss_m > 0.0 and self.miss_share > 0.0:
            if task not in _VARIED_GRASPS:
                raise ValueError(f"missed grasps are defined for {sorted(_VARIED_GRASPS)}, not {task!r}")
            for side, index in _VARIED_GRASPS[task]:
                arm = getattr(expert, side)
                if rng.random() < self.miss_share:
                    offset = self._offset(side, rng)
                    # Drawn only when asked for, so recordings made before regrasps existed keep their streams.
                    regrasp = self.regrasp_share > 0.0 and rng.random() < self.regrasp_share
                    arm.waypoints = _with_miss(arm.waypoints, index, offset, regrasp)
        if self.timing > 0.0:
            warp = _time_warp(self.timing, rng)
            for arm in (expert.left, expert.right):
                arm.waypoints = [replace(w, step=warp(w.step)) for w in arm.waypoints]

    def _offset(self, side: str, rng: np.random.Generator) -> np.ndarray:
        """Across the approach: the right hand comes down onto the cube (off in x, y); the left comes in level
        along x with its fingers vertical (off in depth x and sideways y, never down into the cube)."""
        angle = rng.uniform(0.0, 2.0 * np.pi)
        size = self.miss_m * rng.uniform(0.5, 1.0)
        lift = 0.01 if side == "right" else 0.0  # the right fingertips reach below the TCP: clear the cube's top
        return np.array([size * np.cos(angle), size * np.sin(angle), lift])


def _with_miss(waypoints: list, index: int, offset: np.ndarray, regrasp: bool = False) -> list:
    """Arrive at `offset` from waypoints[index]'s target two thirds of the way to it, then onto the target in
    the first third of the next span (the closing keeps its step). With `regrasp`, the hand closes where it
    missed and opens again first, the four moves sharing the time from the miss to the closing equally."""
    from eva_runtime.sim.experts import Waypoint

    previous = waypoints[index - 1].step if index > 0 else 0
    arrive, after = waypoints[index], waypoints[index + 1]
    target = arrive.target
    if target is None:
        raise ValueError("a varied grasp needs a waypoint with a target")

    def missed(sim):
        position, rotation = target(sim)
        return position + offset, rotation

    miss_step = previous + round(2 * (arrive.step - previous) / 3)
    if regrasp:
        span = after.step - miss_step
        closed, reopened, onto = (miss_step + round(span * share) for share in (0.25, 0.5, 0.75))
        correction = [
            Waypoint(closed, None, after.gripper),  # closes on the miss (air, or the cube's edge)
            Waypoint(reopened, None, arrive.gripper),
            Waypoint(onto, target, arrive.gripper),
        ]
    else:
        correction = [Waypoint(arrive.step + round((after.step - arrive.step) / 3), target, arrive.gripper)]
    return [*waypoints[:index], Waypoint(miss_step, missed, arrive.gripper), *correction, *waypoints[index + 1 :]]


def _time_warp(timing: float, rng: np.random.Generator):
    """A monotone piecewise-linear map of script ticks onto themselves, 0 -> 0 and 400 -> 400."""
    spans = SCRIPT_STEPS // WARP_SPAN
    lengths = WARP_SPAN * rng.uniform(1.0 - timing, 1.0 + timing, spans)
    lengths *= SCRIPT_STEPS / lengths.sum()
    knots = np.r_[0.0, np.cumsum(lengths)]
    nominal = np.arange(spans + 1) * WARP_SPAN

    def warp(step: int) -> int:
        return round(float(np.interp(step, nominal, knots)))

    return warp
