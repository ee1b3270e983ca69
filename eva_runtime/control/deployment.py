"""The one place a deployment is assembled, and the one way its episodes are run and logged.

`Deployment.from_bundle` verifies a bundle (every hash, the embodiment, the timing) and turns it into what the
runtime needs: the planner spec (IDM, world model, reward, gate settings), the model id every episode is logged
under, and, only for the oracle test instrument, the source of its privileged view of a simulated robot.
`run_episodes` drives any robot (the MuJoCo simulation, the Piper arms over CAN) through the autonomous loop and
logs every episode through `EpisodeSession`: the robot's own success check where it has one, otherwise an
operator's label, and an episode cut short is ended as aborted, never lost. `eva run`, the closed-loop ladder,
`eva eval compare`, the benchmarks and the ROS policy node build their deployments here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from eva_runtime.bundle import Bundle, load_bundle
from eva_runtime.control.autonomous_loop import LoopSettings
from eva_runtime.control.episode_runner import run_autonomous_episode
from eva_runtime.control.episode_stats import EpisodeStats, episode_counters
from eva_runtime.control.planner_port import PlannerPort
from eva_runtime.control.planner_process import PlannerProcess, PlannerSpec
from eva_runtime.control.sim_runtime import planner_spec
from eva_runtime.embodiment import Embodiment
from eva_runtime.records.episode_session import EpisodeSession
from eva_runtime.records.outcome_log import OutcomeLog
from eva_runtime.robots.interface import RobotInterface

__all__ = ["Deployment", "RunResult", "run_episodes", "stage_funnel"]


@dataclass(frozen=True)
class Deployment:
    bundle: Bundle
    task: str
    spec: PlannerSpec
    model_id: str

    @classmethod
    def from_bundle(
        cls,
        source: Path | str | Bundle,
        task: str,
        *,
        embodiment: Embodiment | None = None,
        world_model: Mapping[str, Any] | None = None,
        planner: Mapping[str, Any] | None = None,
        attempts: int = 2,
        threshold: float = 0.0,
    ) -> Deployment:
        """`embodiment`: the robot's own file, checked against the bundle's; `world_model` and `planner`: keys
        merged into the world-model spec and the gate's settings for this deployment (the ladder's degradations,
        best-of-N) without writing a new bundle. Raises `BundleError` before anything starts."""
        bundle = source if isinstance(source, Bundle) else load_bundle(Path(source), embodiment)
        spec = planner_spec(bundle, task, attempts, threshold).merged(world_model, planner)
        remote = spec.world_model.get("kind") == "remote"  # the bundle's model, served from another machine
        served = f"remote:{spec.world_model.get('url')}" if remote else bundle.manifest.world_model.id
        model_id = f"{served}+idm:{bundle.hashes()['idm'][:8]}"
        # The sampler's settings changed from the bundle's are part of what ran (a remote model's url is not).
        sampler = {key: value for key, value in dict(world_model or {}).items() if key in ("steps", "guidance")}
        changes = {**dict(spec.world_model.get("degrade") or {}), **sampler, **dict(planner or {})}
        if changes:
            model_id += "~" + ",".join(f"{k}={v}" for k, v in sorted(changes.items()))
        return cls(bundle, task, spec, model_id)

    @property
    def oracle(self) -> bool:
        """The world model that will run is the oracle (a bundle's oracle may be replaced, e.g. by a remote one)."""
        return self.spec.world_model.get("kind") == "oracle"

    def loop_settings(self, settings: LoopSettings, embodiment) -> LoopSettings:
        """`settings` for this deployment: each plan request carries the observed frames the world model was trained
        to condition on unless `settings` names a number (control/frame_history.py; one for the oracle, which reads
        the simulator), and the plans' own reward scores the executed commands too (control/executed_score.py)."""
        entry = self.bundle.manifest.world_model
        if settings.committed_frames and (self.oracle or not self.spec.settings.keep_imagined):
            raise ValueError(
                "committed_frames needs a learned world model whose planner keeps its imagined frames"
                " (planner keep_imagined); the oracle re-simulates from the robot's state instead"
            )
        own = 1 if self.oracle or entry.sampling is None else entry.sampling.history_frames
        settings = replace(settings, history_frames=settings.history_frames or own, history_fps=entry.fps)
        if settings.executed_reward is not None:
            return settings
        from eva_runtime.reward import RewardConfig

        reward = RewardConfig.from_embodiment(embodiment, self.bundle.manifest.idm.fps, **self.spec.reward)
        return replace(settings, executed_reward=reward, executed_horizon=self.spec.settings.horizon)

    def start_planner(self, wait_s: float | None = 120.0) -> PlannerProcess:
        planner = PlannerProcess(self.spec)
        planner.start(wait_s)
        return planner

    def privileged_source(self, robot: RobotInterface) -> Callable[[int, object], object] | None:
        """The oracle's view of the live simulation; None for a learned model (it sees only the cameras)."""
        if not self.oracle:
            return None
        from eva_runtime.robots.mujoco_robot import MujocoRobot

        if not isinstance(robot, MujocoRobot):
            raise ValueError("the oracle world model is a simulation instrument: it cannot drive a real robot")
        from eva_runtime.control.sim_runtime import oracle_state_source

        return oracle_state_source(robot)


@dataclass(frozen=True)
class RunResult:
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
    expired: int = 0  # answers that came after their plan's last action (a planner slower than its horizon)
    mean_score: float | None = None
    # Safety-filter interventions while executing plans in AUTONOMOUS, per joint-tick (a smooth executor: ~0).
    nominal_intervention_share: float | None = None
    # What the executor's cap tracker changed on those ticks, per joint-tick (cap_tracker.py; None: no tracker).
    tracker_change_share: float | None = None
    executed_mean_score: float | None = None  # the same reward on executed-command windows (executed_score.py)
    per_episode: tuple[bool, ...] = field(default_factory=tuple)
    # Episodes that reached at least each of the task's stages, in order (simulation; empty where unknown).
    stages_reached: dict[str, int] = field(default_factory=dict)
    per_episode_stage: tuple[int | None, ...] = field(default_factory=tuple)
    closest_reach_p50_m: float | None = None  # median over episodes of the gripper's closest approach
    per_episode_reach_m: tuple[float | None, ...] = field(default_factory=tuple)
    # Mean executability of each episode's plans (None: no scored plan): what pairs the plans' quality by seed.
    per_episode_plan_score: tuple[float | None, ...] = field(default_factory=tuple)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("per_episode")}


def run_episodes(
    deployment: Deployment,
    robot: RobotInterface,
    planner: PlannerPort,
    episodes: int,
    first_seed: int,
    log: Path,
    settings: LoopSettings,
    *,
    split: str = "seen",
    on_tick: Callable | None = None,
    operator: Callable | None = None,
    leader: Any = None,
    label: Callable[[], str | None] | None = None,
    restart_planner: Callable[[], None] | None = None,
    clock: Callable[[], float] | None = None,
    instruction: str | None = None,
    record: Path | None = None,
    live: Any = None,
    capture: Any = None,
) -> RunResult:
    """Episodes on a connected robot with a started planner, each one in the outcome log at `log`.

    The outcome is the robot's own check where it has one (simulation; "aborted" with the reason where it has
    none), relabelled by `label()` when an operator gave one ("success"/"failure"; the log keeps both).
    `on_tick(index, episode_id, step, modes, stats)` sees every tick. `instruction`: what the robot is told
    (default: the simulated task's own; a real robot has none, so it must be given). `record`: a directory for
    one MCAP file per episode, named with its hash in the episode's row (refused before anything moves when it
    cannot be written). `live`: a record sink (`FoxgloveLive`, the caller's to close) that gets the same streams.
    `capture`: a `PlanStateCapture` (plan_states.py; a learned model on the simulated robot)."""
    from eva_runtime import __version__

    instruction = _instruction(robot, instruction)
    privileged, planner = _privileged_and_planner(deployment, robot, planner, capture)
    settings = deployment.loop_settings(settings, robot.embodiment)
    recording = _recording(deployment, robot, record, live)
    log.parent.mkdir(parents=True, exist_ok=True)
    results: list[EpisodeStats] = []
    with OutcomeLog(log) as outcomes:
        described = (robot.embodiment.name, deployment.bundle.hashes(), deployment.model_id, __version__)
        session = EpisodeSession(outcomes, *described)
        hooks = {"operator": operator, "leader": leader, "clock": clock, "instruction": instruction}
        try:
            for index in range(episodes):
                episode_id = session.start(deployment.task, instruction, split)
                if recording is not None:
                    recording.begin(outcomes.run_id, episode_id)
                    hooks["on_result"] = recording.tick
                tick = _tick_hook(session, robot, index, episode_id, on_tick)
                stats = run_autonomous_episode(
                    robot, planner, first_seed + index, settings, privileged, tick, restart_planner, **hooks
                )
                results.append(stats)
                _end(session, robot, stats, label, recording)
        finally:
            if recording is not None and session.episode_id is not None:
                recording.end(outcomes, session.episode_id)  # what was recorded before the error stays named
            session.close()  # an episode cut short by an error is ended as aborted
    return _result(deployment, settings, results, log, outcomes.run_id, robot.stages)


def _instruction(robot: RobotInterface, given: str | None) -> str:
    """What the world model is told: `given`, else the simulated task's own (a real robot has none)."""
    instruction = given or robot.instruction
    if not instruction.strip():
        raise ValueError("no instruction for the world model: this robot has no task of its own, pass one")
    return instruction


def _privileged_and_planner(deployment: Deployment, robot: RobotInterface, planner: PlannerPort, capture):
    """The loop's privileged source and planner port: the oracle's view for the oracle; with a plan-state
    capture, the simulator's state for the capture, kept beside a planner that never forwards it."""
    if capture is None:
        return deployment.privileged_source(robot), planner
    if deployment.oracle:
        raise ValueError("plan states are captured from a learned model; the oracle's states are the expert's")
    return capture.source(robot), capture.wrap(planner)


def _recording(deployment: Deployment, robot: RobotInterface, record: Path | None, live):
    """The per-tick recorder when a file or a live view wants the streams; None when neither does."""
    if record is None and live is None:
        return None
    from eva_runtime.records.episode_recording import EpisodeRecording

    idm = deployment.bundle.manifest.idm
    return EpisodeRecording(record, robot, idm.image_size, idm.fps, sinks=() if live is None else (live,))


def _tick_hook(session: EpisodeSession, robot: RobotInterface, index: int, episode_id: int, on_tick):
    """Per tick: the caller's hook, and the episode's counters into the log every 100 ticks (a crash loses at
    most those since the last write)."""
    period = robot.embodiment.control_period_s

    def tick(step, modes, stats) -> None:
        if on_tick is not None:
            on_tick(index, episode_id, step, modes, stats)
        if step % 100 == 0:
            session.update(episode_counters(stats, period))

    return tick


def _end(session: EpisodeSession, robot: RobotInterface, stats: EpisodeStats, label, recording) -> None:
    """The episode's outcome (the robot's check, then an operator's label) and its recording, into the log."""
    counters = episode_counters(stats, robot.embodiment.control_period_s)
    checked = robot.success()
    if checked is None:
        episode_id = session.end("aborted", counters, labelled_by="automatic", reason="no success check on this robot")
    else:
        reason = None if checked else ("planner faults" if stats.planner_faults else "task not completed")
        if reason is not None and stats.stage is not None and robot.stages:
            reason += f"; furthest stage: {_stage_name(robot.stages, stats.stage)}"
        episode_id = session.end("success" if checked else "failure", counters, labelled_by="automatic", reason=reason)
    taken = label() if label is not None else None
    if taken is not None:  # the operator's judgement overrides the automatic one; the log keeps both
        session.log.label_episode(episode_id, taken, "operator")
    if recording is not None:
        recording.end(session.log, episode_id)


def _share_of_nominal_joint_ticks(
    results: list[EpisodeStats], counts: Callable[[EpisodeStats], Counter]
) -> float | None:
    """What `counts` counts per episode, over all episodes' joint-ticks of nominal autonomous motion."""
    joint_ticks = sum(r.nominal_joint_ticks for r in results)
    return sum(sum(counts(r).values()) for r in results) / joint_ticks if joint_ticks else None


def _result(deployment, settings, results: list[EpisodeStats], log: Path, run_id: str, stages=()) -> RunResult:
    latencies = [x for r in results for x in r.latencies_s]
    executed = [s for r in results for s in r.executed_scores]
    reaches = [r.closest_reach_m for r in results if r.closest_reach_m is not None]
    return RunResult(
        task=deployment.task,
        mode="sync" if settings.synchronous else "async",
        episodes=len(results),
        successes=sum(r.success for r in results),
        planning_latency_p50_s=float(np.median(latencies)) if latencies else None,
        hold_ticks_per_episode=float(np.mean([r.hold_ticks for r in results])) if results else 0.0,
        overruns=sum(r.overruns for r in results),
        max_command_step=max((r.max_step_change for r in results), default=0.0),
        log=str(log),
        run_id=run_id,
        model_id=deployment.model_id,
        plans=sum(r.plans for r in results),
        rejected=sum(r.rejected for r in results),
        expired=sum(r.expired_plans for r in results),
        mean_score=_mean_finite([s for r in results for s in r.scores]),
        nominal_intervention_share=_share_of_nominal_joint_ticks(results, lambda r: r.nominal_interventions),
        tracker_change_share=(
            _share_of_nominal_joint_ticks(results, lambda r: r.tracker_changes)
            if settings.track_headroom is not None
            else None
        ),
        executed_mean_score=float(np.mean(executed)) if executed else None,
        per_episode=tuple(bool(r.success) for r in results),
        stages_reached=stage_funnel(stages, results),
        per_episode_stage=tuple(r.stage for r in results),
        closest_reach_p50_m=float(np.median(reaches)) if reaches else None,
        per_episode_reach_m=tuple(r.closest_reach_m for r in results),
        per_episode_plan_score=tuple(_mean_finite(r.scores) for r in results),
    )


def _mean_finite(values) -> float | None:
    finite = [float(v) for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _stage_name(stages: tuple[str, ...], reached: int) -> str:
    return stages[reached - 1] if reached > 0 else "none"


def stage_funnel(stages: tuple[str, ...], results: list[EpisodeStats]) -> dict[str, int]:
    """For each stage, how many episodes got at least that far (a funnel: never increasing along the task)."""
    reached = [r.stage for r in results if r.stage is not None]
    return {name: sum(stage >= index for stage in reached) for index, name in enumerate(stages, start=1)}
