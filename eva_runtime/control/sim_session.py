"""Run autonomous episodes on the simulated robot from a verified bundle, each one in the outcome log.

The one in-process path behind `eva run` and the closed-loop ladder (`eva eval ladder`): verified bundle ->
simulated robot -> planner process -> autonomous loop -> SQLite outcome log, returning typed results instead of
a printed line. `world_model` and `planner` overrides change the planner spec for one run (the ladder's
degradations, best-of-N sampling) without writing a new bundle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SimRunResult", "run_sim_episodes"]


@dataclass(frozen=True)
class SimRunResult:
    task: str
    mode: str
    episodes: int
    successes: int
    planning_latency_p50_s: float | None
    hold_ticks_per_episode: float
    overruns: int
    max_command_step: float
    log: str
    run_id: str
    model_id: str
    plans: int = 0
    rejected: int = 0
    mean_score: float | None = None
    per_episode: tuple[bool, ...] = field(default_factory=tuple)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "per_episode"}


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
    operator_factory: Callable | None = None,
    on_episode_end: Callable | None = None,
    max_steps: int | None = None,
) -> SimRunResult:
    """`world_model`: keys merged into the world-model spec (e.g. {"degrade": {...}}); `planner`: into the planner
    settings (e.g. {"samples": 4}); `max_steps`: control ticks per episode (default the loop's 400);
    `operator_factory(robot) -> (operator, leader)` for operator keys;
    `on_tick(index, episode_id, outcomes, step, modes, stats)`; `on_episode_end(episode_id, outcomes)`."""
    from eva_runtime import __version__
    from eva_runtime.bundle import load_bundle
    from eva_runtime.control.episode_runner import LoopSettings, episode_counters, run_autonomous_episode
    from eva_runtime.control.planner_process import PlannerProcess
    from eva_runtime.control.sim_runtime import oracle_state_source, planner_spec
    from eva_runtime.embodiment import load_embodiment
    from eva_runtime.records.outcome_log import OutcomeLog
    from eva_runtime.robots.mujoco_robot import MujocoRobot

    deployed = load_bundle(bundle_dir)  # every hash, the embodiment and the timing are checked here
    spec = planner_spec(deployed, task).merged(world_model, planner)
    sim = MujocoRobot(load_embodiment(deployed.files["embodiment"]), task)
    sim.connect()
    process = PlannerProcess(spec)
    process.start()
    model_id = f"{deployed.manifest.world_model.id}+idm:{deployed.hashes()['idm'][:8]}"
    degrade = spec.world_model.get("degrade")
    if degrade or planner:
        model_id += "~" + ",".join(f"{k}={v}" for k, v in sorted({**(degrade or {}), **(planner or {})}.items()))
    # Only the oracle (a test instrument) reads the simulator's state; a learned model sees only the cameras.
    privileged = oracle_state_source(sim) if deployed.manifest.world_model.kind == "oracle" else None
    operator, leader = operator_factory(sim) if operator_factory is not None else (None, None)
    period = sim.embodiment.control_period_s
    settings = LoopSettings(synchronous=sync, pace=pace)
    if max_steps is not None:  # the task's script needs ~330 of 400 ticks: a slow planner needs slack to finish
        settings = dataclasses.replace(settings, max_steps=max_steps)
    log.parent.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        with OutcomeLog(log) as outcomes:
            run_id = outcomes.run_id
            for index in range(episodes):
                episode_id = outcomes.start_episode(
                    task, sim.instruction, split, sim.embodiment.name, deployed.hashes(), model_id, __version__
                )

                def tick(step, modes, stats, index=index, episode_id=episode_id, outcomes=outcomes) -> None:
                    if on_tick is not None:
                        on_tick(index, episode_id, outcomes, step, modes, stats)
                    if step % 100 == 0:
                        outcomes.update_episode(episode_id, **episode_counters(stats, period))

                stats = run_autonomous_episode(
                    sim, process, first_seed + index, settings, privileged, tick, operator=operator, leader=leader
                )
                results.append(stats)
                reason = None if stats.success else ("planner faults" if stats.planner_faults else "task not completed")
                outcome = "success" if stats.success else "failure"
                outcomes.end_episode(episode_id, outcome, "automatic", reason, **episode_counters(stats, period))
                if on_episode_end is not None:
                    on_episode_end(episode_id, outcomes)
    finally:
        process.close()
        sim.disconnect()
    latencies = [x for r in results for x in r.latencies_s]
    scores = [s for r in results for s in r.scores if np.isfinite(s)]
    return SimRunResult(
        task=task,
        mode="sync" if sync else "async",
        episodes=len(results),
        successes=sum(r.success for r in results),
        planning_latency_p50_s=float(np.median(latencies)) if latencies else None,
        hold_ticks_per_episode=float(np.mean([r.hold_ticks for r in results])),
        overruns=sum(r.overruns for r in results),
        max_command_step=max(r.max_step_change for r in results),
        log=str(log),
        run_id=run_id,
        model_id=model_id,
        plans=sum(r.plans for r in results),
        rejected=sum(r.rejected for r in results),
        mean_score=float(np.mean(scores)) if scores else None,
        per_episode=tuple(bool(r.success) for r in results),
    )
