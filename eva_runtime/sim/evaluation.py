"""Closed-loop evaluation in simulation: N seeded episodes of a task with any policy, through the safety filter.

A policy is anything with `reset(robot, seed)` and `act(observation) -> target or None` (None holds). Every
target goes through the safety filter before the robot sees it, exactly as on hardware. Per episode the harness
records success (judged on the final state), steps, wall time, time spent in the policy, and the safety
filter's interventions by check.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from eva_runtime.records.success_rate import wilson_interval
from eva_runtime.robots.interface import Observation
from eva_runtime.robots.mujoco_robot import MujocoRobot
from eva_runtime.safety import SafetyFilter
from eva_runtime.sim.expert_variation import ExpertVariation

__all__ = ["EpisodeResult", "ExpertPolicy", "Policy", "evaluate", "run_episode", "summarize"]


class Policy(Protocol):
    needs_cameras: bool

    def reset(self, robot: MujocoRobot, seed: int) -> None: ...

    def act(self, observation: Observation) -> np.ndarray | None: ...


class ExpertPolicy:
    """The scripted expert as a policy (privileged: it reads the simulation state, not the cameras)."""

    needs_cameras = False

    def __init__(self, variation: ExpertVariation | None = None) -> None:
        """`variation`: varied demonstrations (`sim/expert_variation.py`), drawn per episode from its seed."""
        self.variation = variation
        self._expert = None
        self._robot: MujocoRobot | None = None
        self._step = 0

    def reset(self, robot: MujocoRobot, seed: int) -> None:
        from eva_runtime.sim.experts import make_expert

        self._robot = robot
        self._expert = make_expert(robot.task_name, robot.sim, variation=self.variation, seed=seed)
        self._step = 0

    def act(self, observation: Observation) -> np.ndarray:
        target = self._expert(self._robot.sim, self._step)
        self._step += 1
        return target


@dataclass(frozen=True)
class EpisodeResult:
    task: str
    seed: int
    success: bool
    steps: int
    wall_s: float
    policy_s: float
    timed_out: bool
    fault: str | None
    interventions: dict[str, int] = field(default_factory=dict)
    stage: int = 0  # how many of the task's stages the episode reached (tasks.TaskSpec.stages)


def run_episode(
    robot: MujocoRobot,
    policy: Policy,
    seed: int,
    max_steps: int,
    wall_limit_s: float | None = None,
    on_step: Callable[[int, Observation, np.ndarray], None] | None = None,
    frames_every: int = 1,
) -> EpisodeResult:
    """Run one episode; `on_step(step, observation, applied_command)` sees every tick (recording, live view),
    with camera frames every `frames_every` steps (rendering is the expensive part of a simulated tick)."""
    robot.reset_episode(seed)
    safety = SafetyFilter.for_embodiment(robot.embodiment)
    first = robot.observe(cameras=False)
    safety.reset(first.stamp, first.joint_position, first.joint_velocity)
    policy.reset(robot, seed)
    counts: Counter[str] = Counter()
    began = time.perf_counter()
    in_policy = 0.0
    timed_out = False
    steps = 0
    for step in range(max_steps):
        observation = robot.observe(cameras=policy.needs_cameras or (on_step is not None and step % frames_every == 0))
        started = time.perf_counter()
        target = policy.act(observation)
        in_policy += time.perf_counter() - started
        result = safety.step(
            robot.now() + robot.embodiment.control_period_s, target, measured=observation.joint_position
        )
        counts.update(result.interventions.counts())
        applied = robot.send(result)
        if on_step is not None:
            on_step(step, observation, applied)
        steps = step + 1
        if wall_limit_s is not None and time.perf_counter() - began > wall_limit_s:
            timed_out = True
            break
    return EpisodeResult(
        task=robot.task_name,
        seed=seed,
        success=robot.success() and not timed_out,
        steps=steps,
        wall_s=time.perf_counter() - began,
        policy_s=in_policy,
        timed_out=timed_out,
        fault=safety.fault,
        interventions=dict(counts),
        stage=robot.furthest_stage(),
    )


def evaluate(
    robot: MujocoRobot,
    policy: Policy,
    seeds: Sequence[int],
    max_steps: int,
    wall_limit_s: float | None = None,
    on_episode: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    results = []
    for seed in seeds:
        result = run_episode(robot, policy, seed, max_steps, wall_limit_s)
        results.append(result)
        if on_episode is not None:
            on_episode(result)
    return results


def summarize(results: Sequence[EpisodeResult]) -> dict[str, object]:
    """Success rate with its Wilson 95 % interval, timing and interventions over a set of episodes."""
    n = len(results)
    wins = sum(r.success for r in results)
    low, high = wilson_interval(wins, n)
    interventions: Counter[str] = Counter()
    for r in results:
        interventions.update(r.interventions)
    steps = max(1, sum(r.steps for r in results))
    return {
        "episodes": n,
        "successes": wins,
        "success_rate": wins / n if n else 0.0,
        "wilson95": [round(low, 3), round(high, 3)],
        "timed_out": sum(r.timed_out for r in results),
        "faults": sum(r.fault is not None for r in results),
        "mean_wall_s": round(float(np.mean([r.wall_s for r in results])), 3) if n else 0.0,
        "mean_policy_ms_per_step": round(1e3 * sum(r.policy_s for r in results) / steps, 3),
        "interventions": dict(interventions),
        "failed_seeds": [r.seed for r in results if not r.success],
    }
