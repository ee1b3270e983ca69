"""Autonomous episodes on the simulated robot from a bundle: `Deployment` + the MuJoCo robot + `run_episodes`.

The in-process path behind `eva run`, the closed-loop ladder (`eva eval ladder`) and `eva eval compare`,
returning typed results instead of a printed line. `world_model` and `planner` overrides change the planner
spec for one run (the ladder's degradations, best-of-N sampling) without writing a new bundle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eva_runtime.control.deployment import RunResult

__all__ = ["SimRunResult", "run_sim_episodes"]

SimRunResult = RunResult  # the name the ladder and older callers use


def run_sim_episodes(
    bundle_dir: Path,
    task: str,
    episodes: int,
    first_seed: int,
    log: Path,
    *,
    sync: bool = False,
    pace: bool = True,
    split: str = "seen",
    world_model: Mapping[str, Any] | None = None,
    planner: Mapping[str, Any] | None = None,
    on_tick: Callable | None = None,
    operator: Callable | None = None,
    leader_factory: Callable | None = None,
    label: Callable[[], str | None] | None = None,
    max_steps: int | None = None,
    instruction: str | None = None,
    record: Path | None = None,
    live: Any = None,
    loop: Mapping[str, Any] | None = None,
    capture: Any = None,
) -> RunResult:
    """`world_model`: keys merged into the world-model spec (e.g. {"degrade": {...}}); `planner`: into the planner
    settings (e.g. {"samples": 4}); `max_steps`: control ticks per episode (default the loop's 400);
    `operator(step, now)` for operator keys, `leader_factory(robot)` for the leader arms, `label()` for an
    operator's outcome label; `on_tick(index, episode_id, step, modes, stats)`; `instruction`: instead of the
    task's own; `record`: a directory for one MCAP recording per episode; `live`: a record sink (`FoxgloveLive`)
    that gets the same streams as they happen; `loop`: `LoopSettings` fields to change (the executor's curve,
    junction, retiming, receding horizon), given as they are; `capture`: a `PlanStateCapture` (plan_states.py)."""
    from eva_runtime.control.autonomous_loop import LoopSettings
    from eva_runtime.control.deployment import Deployment, run_episodes
    from eva_runtime.embodiment import load_embodiment
    from eva_runtime.robots.mujoco_robot import MujocoRobot

    # Every hash, the embodiment and the timing are checked here, before the simulator or the planner start.
    deployment = Deployment.from_bundle(bundle_dir, task, world_model=world_model, planner=planner)
    settings = LoopSettings(synchronous=sync, pace=pace)
    if max_steps is not None:  # the task's script needs ~330 of 400 ticks: a slow planner needs slack to finish
        settings = dataclasses.replace(settings, max_steps=max_steps)
    settings = dataclasses.replace(settings, **(loop or {}))
    embodiment = load_embodiment(deployment.bundle.files["embodiment"])
    streamed = settings.cameras if settings.streams_cameras(embodiment.control_rate_hz) else ()
    sim = MujocoRobot(embodiment, task, streamed_cameras=streamed)
    sim.connect()
    try:
        process = deployment.start_planner()
        try:
            leader = leader_factory(sim) if leader_factory is not None else None
            hooks = {"on_tick": on_tick, "operator": operator, "leader": leader, "label": label}
            extras = {"split": split, "instruction": instruction, "record": record, "live": live, "capture": capture}
            return run_episodes(deployment, sim, process, episodes, first_seed, log, settings, **hooks, **extras)
        finally:
            process.close()
    finally:
        sim.disconnect()
