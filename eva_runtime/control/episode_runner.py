"""One autonomous episode: the control loop that ties robot, planner, executor, modes and the safety filter.

Readable top to bottom, once per control tick:
1. read the robot; take any finished plan from the planner (install it, or hold on a rejection);
2. watch the planner: no answer within the timeout, or a dead process, is a planner fault (HOLD);
3. ask for the next plan early enough that it lands before the current one runs out (async), or only when it
   has run out (sync: plan, execute, plan again);
4. the mode decides the target (AUTONOMOUS: the executor; anything else: hold), the safety filter makes it
   safe, the robot gets the filter's result, and nothing else;
5. pace on a monotonic clock and count every missed deadline.
Statistics for the episode log are collected on the way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from eva_runtime.control.executor import PlanExecutor
from eva_runtime.control.modes import Mode, ModeManager, Trigger
from eva_runtime.control.planner import PlanRequest
from eva_runtime.control.planner_process import PlannerProcess
from eva_runtime.control.teleop import LeaderArms, TeleopHandover
from eva_runtime.robots.mujoco_robot import MujocoRobot
from eva_runtime.safety import SafetyFilter

__all__ = ["EpisodeStats", "LoopSettings", "run_autonomous_episode"]


@dataclass(frozen=True)
class LoopSettings:
    max_steps: int = 400
    synchronous: bool = False
    execute_fraction: float = 1.0  # receding horizon: the share of each plan usable before the next one replaces it
    planner_timeout_s: float = 3.0
    initial_latency_s: float = 0.8  # first guess of observation-to-plan time, then a running estimate
    pace: bool = True  # real-time pacing; off only for tests of logic, never for timing claims
    cameras: tuple[str, ...] = ("cam_high",)


@dataclass
class EpisodeStats:
    success: bool = False
    steps: int = 0
    plans: int = 0
    rejected: int = 0
    planner_faults: int = 0
    dropped_actions: int = 0
    overruns: int = 0
    hold_ticks: int = 0
    latencies_s: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    interventions: Counter = field(default_factory=Counter)
    mode_events: list = field(default_factory=list)
    max_step_change: float = 0.0  # largest |command(t) - command(t-1)| seen, rad
    teleop_interventions: int = 0
    teleop_ticks: int = 0
    periods_s: list[float] = field(default_factory=list)  # monotonic time between tick starts (paced runs)
    work_s: list[float] = field(default_factory=list)  # time spent working in each tick
    first_command_s: float | None = None  # first plan request (a camera frame) to the first planned command
    plan_age_s: float = float("nan")  # age of the plan being executed (its observation's time to now)


def run_autonomous_episode(
    robot: MujocoRobot,
    planner: PlannerProcess,
    seed: int,
    settings: LoopSettings,
    privileged: Callable[[int, object], object] | None = None,
    on_tick: Callable[[int, ModeManager, EpisodeStats], None] | None = None,
    restart_planner: Callable[[], None] | None = None,
    operator: Callable[[int, float], Trigger | None] | None = None,
    leader: LeaderArms | None = None,
) -> EpisodeStats:
    """Run one episode from `robot.reset_episode(seed)`; the planner process must already be started."""
    robot.reset_episode(seed)
    period = robot.embodiment.control_period_s
    safety = SafetyFilter.for_embodiment(robot.embodiment)
    first = robot.observe(cameras=False)
    safety.reset(first.stamp, first.joint_position, first.joint_velocity)
    modes = ModeManager(Mode.AUTONOMOUS)
    executor = PlanExecutor(execute_fraction=settings.execute_fraction)
    stats = EpisodeStats()
    latency = settings.initial_latency_s
    outstanding: tuple[int, float] | None = None  # (request id, wall time sent)
    request_id = 0
    frame_timeout = robot.embodiment.safety.timeouts_s.get("frame", 0.5)
    teleop_timeout = robot.embodiment.safety.timeouts_s.get("teleop", 0.1)
    state_timeout = robot.embodiment.safety.timeouts_s.get("joint_state", 0.1)
    handover = TeleopHandover(safety.limits)
    previous_command = first.joint_position.copy()
    progress = 0
    deadline = tick_started = time.monotonic()
    first_request: float | None = None
    for step in range(settings.max_steps):
        now = robot.now()
        observation = robot.observe(cameras=False)
        command = operator(step, now) if operator is not None else None
        if command is not None:  # operator input (keys in the CLI, services on ROS) goes through the same table
            event = modes.handle(command, now, "operator")
            stats.mode_events.append(event)
            if event.reseed:
                safety.reset(now, observation.joint_position)
            if event.accepted and event.after is Mode.TELEOP and event.before is not Mode.TELEOP:
                executor.clear()  # the plan belonged to the other commander
                handover.start(safety.state.command)
                if leader is not None:
                    leader.takeover(progress, safety.state.command)
                stats.teleop_interventions += 1

        answer = planner.poll()
        if answer is not None and outstanding is not None and answer[0] == outstanding[0]:
            outstanding = None
            outcome = answer[1]
            stats.scores.extend(s for s in outcome.scores if np.isfinite(s))
            if outcome.plan is None:
                stats.rejected += 1
                executor.clear()  # an old plan must not resume the robot after a rejection
                stats.mode_events.append(modes.handle(Trigger.PLAN_REJECTED, now, outcome.reason))
            elif outcome.plan.end_time > now:
                stats.plans += 1
                stats.latencies_s.append(outcome.seconds)
                latency = 0.7 * latency + 0.3 * (now - outcome.plan.start_time)
                stats.dropped_actions += executor.install(outcome.plan, now, safety.state.command)

        waited = time.perf_counter() - outstanding[1] if outstanding else 0.0
        planner_lost = not planner.alive
        if planner_lost:
            outstanding = None
            if restart_planner is not None:
                restart_planner()  # returns at once; plans flow again when the new process is ready
        if (waited > settings.planner_timeout_s or planner_lost) and modes.mode is Mode.AUTONOMOUS:
            # Keep waiting for the late answer (a slow plan is still a plan); the robot holds meanwhile.
            stats.planner_faults += 1
            reason = "planner process ended" if planner_lost else f"no plan for {waited:.2f} s"
            stats.mode_events.append(modes.handle(Trigger.PLANNER_TIMEOUT, now, reason))
            executor.clear()

        wants_plan = modes.mode is Mode.AUTONOMOUS or (modes.holding_automatically and executor.plan is None)
        due = executor.target(now + period) is None if settings.synchronous else executor.needs_plan(now, latency)
        asking = wants_plan and outstanding is None and due and planner.ready
        frames = robot.observe(cameras=settings.cameras).frames if asking else {}
        stale = [c for c in settings.cameras if frames and (c not in frames or now - frames[c].stamp > frame_timeout)]
        if stale and modes.mode is Mode.AUTONOMOUS:
            # Planning from an old picture would execute a plan for a world that has moved on: hold instead.
            stats.mode_events.append(modes.handle(Trigger.STALE_INPUT, now, f"stale frames from {stale}"))
            executor.clear()
        if frames and not stale:
            request = PlanRequest(
                time=now,
                frames={name: frames[name].image[None] for name in settings.cameras if name in frames},
                instruction=robot.instruction,
                seed=seed * 10_000 + request_id,
                # Task progress, not wall time: ticks actually executed under a plan. A test-instrument world
                # model (the oracle) continues its script from there, not from where a robot that never waited
                # would be.
                privileged_state=privileged(progress, safety.state) if privileged else None,
            )
            request_id += 1
            if planner.submit(request_id, request):
                outstanding = (request_id, time.perf_counter())
                first_request = first_request or time.monotonic()

        target = executor.target(now + period)
        if modes.holding_automatically and target is not None:
            event = modes.handle(Trigger.CAUSE_CLEARED, now, "a new plan arrived")
            stats.mode_events.append(event)
            if event.reseed:
                safety.reset(now, observation.joint_position)
        stamps = {"joint_state": observation.stamp}
        if modes.mode is Mode.TELEOP:
            reading = leader.read() if leader is not None else None
            if reading is None or now - reading[0] > teleop_timeout:
                stats.mode_events.append(modes.handle(Trigger.STALE_INPUT, now, "leader arms silent"))
                target = None
            else:
                target = handover.target(reading[1], period)
                stamps["teleop"] = reading[0]
            stats.teleop_ticks += 1
        elif modes.mode is not Mode.AUTONOMOUS:
            target = None
        elif target is not None:
            stamps["plan"] = executor.plan.start_time  # a plan older than its timeout is not executed
        result = safety.step(now + period, target, measured=observation.joint_position, input_stamps=stamps)
        stats.interventions.update(item.check.value for item in result.interventions)
        if now - observation.stamp > state_timeout and modes.mode is Mode.AUTONOMOUS:
            # The filter already holds on the stale stamp; the mode records why and resumes when it is fresh.
            stats.mode_events.append(modes.handle(Trigger.STALE_INPUT, now, "joint state is stale"))
            executor.clear()
        fault = safety.fault or observation.fault
        if fault and modes.mode in (Mode.AUTONOMOUS, Mode.TELEOP, Mode.HOLD):
            # The filter already holds on a tracking fault; the mode makes it an operator matter (FAULT).
            trigger = Trigger.TRACKING_ERROR if safety.fault else Trigger.ROBOT_FAULT
            stats.mode_events.append(modes.handle(trigger, now, fault))
            executor.clear()
        stats.hold_ticks += target is None
        stats.plan_age_s = now - executor.plan.start_time if executor.plan is not None else float("nan")
        progress += target is not None
        applied = robot.send(result)
        stats.max_step_change = max(stats.max_step_change, float(np.max(np.abs(applied - previous_command))))
        previous_command = applied
        stats.steps = step + 1
        if on_tick is not None:
            on_tick(step, modes, stats)
        if target is not None and stats.first_command_s is None and first_request is not None:
            stats.first_command_s = time.monotonic() - first_request
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
    stats.success = robot.success()
    return stats
