"""Task progress of a decoded plan, measured by executing it in the simulation the training episode came from.

The IDM reward (`idm_reward.py`) scores how a decoded motion moves: smooth, in limits, plausible. It cannot see
where the motion goes, and on the CPU-trained models that is what loses the task: the imagined hand ends a
centimetre or two short of the cube (docs/world_model.md, "Where the grasp is lost"). For a condition drawn from
a recorded simulation episode, the start state is known exactly: the scripted expert is replayed from the
episode's seed through the safety filter to the condition's frame, as the recording ran it, and the replayed
command is checked against the recorded one (a mismatch means the simulation or the expert changed since the
recording, and is refused). Each rollout's decoded actions are then played from that state the way the runtime
plays a plan: the executor's B-spline, the safety filter, the simulated arms at the control rate.

Progress of one played plan, in stages of the task (`sim/tasks.py`; transfer cube: touched, lifted, both holding,
handed over):

    progress = (furthest stage held for `hold_ticks` ticks + stage at the plan's end) / 2 + reach bonus

The first half rewards getting somewhere and not merely brushing past it (a momentary touch is not held); the
second rewards still being there at the end (a dropped cube loses it). The reach bonus is the dense part before
the first stage: 1 when the right gripper's closest approach to the object is a centred grasp (4 cm, see
`TaskSpec.reach_distance`), falling linearly to 0 at 12 cm. Only differences within a group of rollouts from the
same start matter to GRPO, so what the start state has already achieved cancels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from eva_runtime.control.executor import Plan, PlanExecutor
from eva_runtime.embodiment import Embodiment
from eva_runtime.robots.interface import check_command
from eva_runtime.safety import SafetyFilter
from eva_runtime.sim.bimanual_sim import START_POSE, BimanualSim, steps_per_frame
from eva_runtime.world_model.oracle import OracleState

__all__ = ["FrameCallback", "PlayedPlan", "TaskProgress", "reach_bonus"]

FrameCallback = Callable[[BimanualSim, np.ndarray], None]

GRASP_REACH_M, FAR_REACH_M = 0.04, 0.12


def reach_bonus(closest_m: float) -> float:
    """1 at a centred grasp's reading (4 cm), 0 from 12 cm on, linear between."""
    return float(np.clip((FAR_REACH_M - closest_m) / (FAR_REACH_M - GRASP_REACH_M), 0.0, 1.0))


@dataclass(frozen=True)
class PlayedPlan:
    furthest_held: int  # highest stage held for hold_ticks consecutive ticks (0: none)
    final: int  # stage at the plan's last tick
    closest_reach_m: float

    @property
    def progress(self) -> float:
        return 0.5 * (self.furthest_held + self.final) + reach_bonus(self.closest_reach_m)

    def row(self) -> dict:
        """The fields an evaluation row reports (names shared by every table that shows task progress)."""
        return {
            "task_progress": self.progress,
            "task_final_stage": float(self.final),
            "task_furthest_held": float(self.furthest_held),
            "task_closest_reach_m": self.closest_reach_m,
        }


class TaskProgress:
    """Replays recorded episodes' starts and plays decoded plans from them; one private simulation, reused."""

    def __init__(self, task: str, embodiment: Embodiment, hold_ticks: int = 5, tolerance: float = 1e-4) -> None:
        from eva_runtime.sim.tasks import task_spec

        if hold_ticks < 1:
            raise ValueError(f"hold_ticks must be >= 1, got {hold_ticks}")
        self.task, self.embodiment, self.hold_ticks, self.tolerance = task, embodiment, hold_ticks, tolerance
        self.spec = task_spec(task)
        self.sim = BimanualSim(task, embodiment.control_rate_hz)
        self._starts: dict[tuple[int, int], OracleState] = {}

    def start_state(self, seed: int, step: int, recorded_command: np.ndarray | None = None) -> OracleState:
        """The state before the command of control step `step` of the expert episode `seed` (cached).

        `recorded_command`: the command the recording applied at `step`; the replay must reproduce it."""
        key = (int(seed), int(step))
        if key not in self._starts:
            self._starts[key] = self._replay(seed, step, recorded_command)
        return self._starts[key]

    def _replay(self, seed: int, step: int, recorded_command: np.ndarray | None) -> OracleState:
        from eva_runtime.sim.experts import make_expert

        sim = self.sim
        sim.reset(START_POSE, self.spec.sample_objects(seed))
        safety = SafetyFilter.for_embodiment(self.embodiment)
        safety.reset(sim.time, sim.joint_positions(), sim.joint_velocities())
        expert = make_expert(self.task, sim)
        start: OracleState | None = None
        for tick in range(step + 1):
            if tick == step:
                start = OracleState(snapshot=sim.snapshot(), step=step, filter_state=safety.state)
            result = safety.step(sim.time + sim.control_period_s, expert(sim, tick), measured=sim.joint_positions())
            command = check_command(self.embodiment, result)
            if tick == step:
                break
            sim.apply(command)
        if recorded_command is not None:
            error = float(np.max(np.abs(command - np.asarray(recorded_command, dtype=np.float64))))
            if not error <= self.tolerance:
                raise ValueError(
                    f"seed {seed}, step {step}: the replayed expert commands {error:.2e} away from the recording "
                    f"(tolerance {self.tolerance}); the simulation or the expert changed since it was recorded"
                )
        assert start is not None
        return start

    def play(
        self, start: OracleState, actions: np.ndarray, fps: float, on_frame: FrameCallback | None = None
    ) -> PlayedPlan:
        """Play `actions` (H, dof; action 0 at the start frame) from `start` as the runtime plays a plan.

        `on_frame(sim, command)` is called at every frame time of the plan (the start included), with the command
        in force then: what a recording of the played plan would keep."""
        sim = self.sim
        sim.restore(start.snapshot)
        safety = SafetyFilter.for_embodiment(self.embodiment)
        safety.restore(start.filter_state)
        plan = Plan(sim.time, fps, np.asarray(actions, dtype=np.float64))
        executor = PlanExecutor()
        executor.install(plan, sim.time, start.filter_state.command)
        # Simulated time is a running float sum: late in an episode the plan's span is a few ulps short of a
        # whole number of ticks, and a 1e-9 tolerance dropped the plan's last tick (and its last frame).
        ticks = int(np.floor((plan.end_time - plan.start_time) / sim.control_period_s + 1e-6))
        levels = np.arange(len(self.spec.stages) + 1)
        held = np.zeros(len(levels), dtype=np.int64)  # consecutive ticks at or above each stage
        furthest, stage, closest = 0, self.spec.stage(sim), self.spec.reach_distance(sim)
        stride = steps_per_frame(self.embodiment.control_rate_hz, fps) if on_frame is not None else 0
        if on_frame is not None:
            on_frame(sim, safety.state.command)
        for tick in range(ticks):
            due = sim.time + sim.control_period_s
            target = executor.target(min(due, plan.end_time))
            if target is None:
                break
            result = safety.step(due, target, measured=sim.joint_positions())
            sim.apply(check_command(self.embodiment, result))
            stage = self.spec.stage(sim)
            closest = min(closest, self.spec.reach_distance(sim))
            held = np.where(levels <= stage, held + 1, 0)
            reached = levels[(held >= self.hold_ticks) & (levels > 0)]
            if len(reached):
                furthest = max(furthest, int(reached.max()))
            if on_frame is not None and (tick + 1) % stride == 0:
                on_frame(sim, safety.state.command)
        return PlayedPlan(furthest, stage, closest)

    def close(self) -> None:
        self.sim.close()
