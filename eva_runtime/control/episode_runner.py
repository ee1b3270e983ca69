"""Run one autonomous episode in real time: the driver that paces :class:`AutonomousLoop` on a monotonic clock.

The loop (`autonomous_loop.py`) owns the per-tick logic; whoever owns the clock drives it: this module for `eva
run`, the benchmarks and the end-to-end tests, the ROS policy node from a wall timer. Pacing, missed deadlines and
operator input between ticks belong to the driver. The loop's pieces are re-exported here for existing callers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from eva_runtime.control.autonomous_loop import AutonomousLoop, LoopSettings, TickResult
from eva_runtime.control.episode_stats import EpisodeStats, episode_counters
from eva_runtime.control.homing import HomingSlide
from eva_runtime.control.modes import ModeManager, Trigger
from eva_runtime.control.planner_port import PlannerPort
from eva_runtime.control.realtime import gc_paused
from eva_runtime.control.teleop import LeaderArms
from eva_runtime.robots.interface import RobotInterface

__all__ = [
    "AutonomousLoop",
    "EpisodeStats",
    "HomingSlide",
    "LoopSettings",
    "TickResult",
    "episode_counters",
    "run_autonomous_episode",
]


def run_autonomous_episode(
    robot: RobotInterface,
    planner: PlannerPort,
    seed: int,
    settings: LoopSettings,
    privileged: Callable[[int, object], object] | None = None,
    on_tick: Callable[[int, ModeManager, EpisodeStats], bool | None] | None = None,
    restart_planner: Callable[[], None] | None = None,
    operator: Callable[[int, float], Trigger | None] | None = None,
    leader: LeaderArms | None = None,
    clock: Callable[[], float] | None = None,
    instruction: str | None = None,
    on_result: Callable[[TickResult], None] | None = None,
) -> EpisodeStats:
    """Run one episode from `robot.reset_episode(seed)`; the planner process must already be started.

    Paced on a monotonic clock (with `settings.pace`), counting every missed deadline. `stats.success` is the
    robot's own success check where it has one (simulation); elsewhere it stays False and an operator labels.
    `clock`: what the loop measures planner waits on (default monotonic time; the robot's simulated clock for
    tests of behaviour without pacing). `instruction`: the language instruction (default: the robot's task's).
    `on_result(tick)`: every tick's :class:`TickResult` (a recorder), inside the tick's time budget.
    `on_tick(step, modes, stats)` sees every tick after it ran; returning True ends the episode after that tick
    (a stop condition that is not a step count, e.g. "the restarted planner's plan is executing").
    """
    robot.reset_episode(seed)
    loop = AutonomousLoop(
        robot,
        planner,
        settings,
        privileged=privileged,
        restart_planner=restart_planner,
        leader=leader,
        instruction=instruction or robot.instruction,
        clock=clock or time.monotonic,
    )
    loop.start(seed)
    with gc_paused() if settings.pace and settings.pause_gc else contextlib.nullcontext():
        _paced_ticks(loop, settings, on_tick, on_result, operator, robot)
    loop.stats.success = robot.success() is True
    loop.stats.stage = robot.furthest_stage()
    loop.stats.closest_reach_m = robot.closest_reach_m()
    return loop.stats


def _paced_ticks(loop: AutonomousLoop, settings: LoopSettings, on_tick, on_result, operator, robot) -> None:
    """The episode's ticks, paced on a monotonic clock when `settings.pace`, counting missed deadlines."""
    stats = loop.stats
    period = loop.period
    deadline = tick_started = time.monotonic()
    for step in range(settings.max_steps):
        trigger = operator(step, robot.now()) if operator is not None else None
        if trigger is not None:  # operator input (keys in the CLI, services on ROS) goes through the same table
            loop.command(trigger)
        result = loop.tick()
        if on_result is not None:
            on_result(result)
        ended_early = on_tick is not None and on_tick(step, loop.modes, stats) is True
        if settings.pace:
            stats.work_s.append(time.monotonic() - tick_started)
            deadline += period
            remaining = deadline - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            else:
                stats.overruns += 1
            ended = time.monotonic()
            stats.periods_s.append(ended - tick_started)
            tick_started = ended
        if ended_early:
            break
