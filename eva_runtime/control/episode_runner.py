"""The autonomous control loop that ties robot, planner, executor, modes and the safety filter, one tick at a time.

:class:`AutonomousLoop` owns the per-tick logic; whoever owns the clock drives it: `run_autonomous_episode` paces
it on a monotonic clock for one episode (`eva run`, the benchmarks, the tests), the ROS policy node calls
:meth:`AutonomousLoop.tick` from a wall timer. Readable top to bottom, once per control tick:
1. read the robot; take any finished plan from the planner (install it, or hold on a rejection);
2. watch the planner: no answer within the timeout, or a dead process, is a planner fault (HOLD);
3. ask for the next plan early enough that it lands before the current one runs out (async), or only when it
   has run out (sync: plan, execute, plan again);
4. the mode decides the target (AUTONOMOUS: the executor; TELEOP: the leader arms; HOLD: hold, or the homing
   slide when one was asked for; anything else: hold), the safety filter makes it safe, the robot gets the
   filter's result, and nothing else.
Operator input (keys in the CLI, services on ROS) enters through :meth:`AutonomousLoop.command`, the same mode
table. Statistics for the episode log are collected on the way; pacing and missed deadlines belong to the driver.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from eva_runtime.control.executor import Plan, PlanExecutor
from eva_runtime.control.modes import Mode, ModeEvent, ModeManager, Trigger
from eva_runtime.control.planner import PlanRequest
from eva_runtime.control.planner_process import PlannerProcess
from eva_runtime.control.teleop import LeaderArms, TeleopHandover
from eva_runtime.robots.interface import RobotInterface
from eva_runtime.safety import FilterResult, SafetyFilter, SafetyLimits
from eva_runtime.safety.braking import braking_speed

__all__ = [
    "AutonomousLoop",
    "EpisodeStats",
    "HomingSlide",
    "LoopSettings",
    "TickResult",
    "episode_counters",
    "run_autonomous_episode",
]


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


def episode_counters(stats: EpisodeStats, control_period_s: float) -> dict:
    """The outcome log's counters (`OutcomeLog.update_episode` / `end_episode` keywords) from loop statistics."""
    latencies = np.array(stats.latencies_s) * 1e3
    scores = np.array(stats.scores)
    counters: dict = {
        "safety_interventions": dict(stats.interventions),
        "teleop_interventions": stats.teleop_interventions,
        "teleop_seconds": stats.teleop_ticks * control_period_s,
    }
    if latencies.size:
        counters["planning_latency_ms"] = {
            "count": int(latencies.size),
            "mean": float(latencies.mean()),
            "p50": float(np.percentile(latencies, 50)),
            "p95": float(np.percentile(latencies, 95)),
            "max": float(latencies.max()),
        }
    if scores.size:
        counters["executability"] = {
            "count": int(scores.size),
            "mean": float(scores.mean()),
            "min": float(scores.min()),
            "rejected": int(stats.rejected),
        }
    return counters


@dataclass(frozen=True)
class TickResult:
    """What one tick did, for drivers that publish it (the ROS node: command, mode, plan, rollout frames)."""

    time: float
    mode: Mode
    target: np.ndarray | None  # None: the filter was asked to hold
    result: FilterResult
    applied: np.ndarray  # what the robot reports it applied
    events: tuple[ModeEvent, ...]  # mode events of this tick (accepted or refused)
    installed: tuple[int, Plan] | None = None  # (request id, plan) installed this tick
    submitted: tuple[int, PlanRequest] | None = None  # (request id, request) sent to the planner this tick
    homing: bool = False  # this tick's target was the homing slide


class HomingSlide:
    """A homing target: a straight line (per arm) from the current command to a pose, at a fraction of the speed
    caps, speeding up and slowing down at the same fraction of the acceleration caps. The filter then follows it
    exactly: a target that started at full speed would make the filter catch up faster than the slide speed, and
    one that stopped dead would leave the filter moving and overshoot the pose by v^2 / 2a."""

    SNAP = 1e-4  # rad: the last bit is one step (braking alone approaches the pose only asymptotically)

    def __init__(self, limits: SafetyLimits, start: np.ndarray, pose: np.ndarray, speed_fraction: float) -> None:
        if not 0 < speed_fraction <= 1:
            raise ValueError(f"homing speed fraction must be in (0, 1], got {speed_fraction}")
        self.limits = limits
        self.pose = np.array(pose, dtype=np.float64, copy=True)
        self.position = np.array(start, dtype=np.float64, copy=True)
        self.speed = speed_fraction * limits.velocity_max
        self.acceleration = speed_fraction * limits.acceleration_max
        self._step = np.zeros_like(self.position)  # last step per joint: the ramp starts from rest

    @property
    def arrived(self) -> bool:
        return bool(np.array_equal(self.position, self.pose))

    def target(self, dt: float) -> np.ndarray:
        gap = self.pose - self.position
        if np.max(np.abs(gap)) <= self.SNAP:
            self.position = self.pose.copy()
            return self.position.copy()
        speed = np.minimum(self.speed, braking_speed(np.abs(gap), self.acceleration, dt))
        allowed = np.minimum(speed * dt, self._step + self.acceleration * dt * dt)
        ratio = np.abs(gap) / np.maximum(allowed, 1e-12)
        # One factor per group keeps each arm's path a straight line in joint space.
        worst = np.maximum.reduceat(ratio, self.limits.group_starts)[self.limits.group_of_joint]
        step = gap / np.maximum(worst, 1.0)
        self._step = np.abs(step)
        self.position = self.position + step
        return self.position.copy()


class AutonomousLoop:
    """One robot's control loop. Call :meth:`start` once, then :meth:`tick` once per control period."""

    def __init__(
        self,
        robot: RobotInterface,
        planner: PlannerProcess,
        settings: LoopSettings,
        *,
        privileged: Callable[[int, object], object] | None = None,
        restart_planner: Callable[[], None] | None = None,
        leader: LeaderArms | None = None,
        instruction: str = "",
    ) -> None:
        self.robot = robot
        self.planner = planner
        self.settings = settings
        self.privileged = privileged
        self.restart_planner = restart_planner
        self.leader = leader
        self.instruction = instruction  # sent with every plan request; a driver may change it between ticks
        self.period = robot.embodiment.control_period_s
        timeouts = robot.embodiment.safety.timeouts_s
        self.frame_timeout = timeouts.get("frame", 0.5)
        self.teleop_timeout = timeouts.get("teleop", 0.1)
        self.state_timeout = timeouts.get("joint_state", 0.1)
        self.safety = SafetyFilter.for_embodiment(robot.embodiment)
        self.executor = PlanExecutor(execute_fraction=settings.execute_fraction)
        self.handover = TeleopHandover(self.safety.limits)
        self.modes = ModeManager(Mode.HOLD)  # until start(): nothing may move before the filter is seeded
        self.stats = EpisodeStats()
        self.seed = 0
        self.step = 0
        self.progress = 0  # ticks executed under a commander's target: the task's progress (the oracle's clock)
        self._latency = settings.initial_latency_s
        self._outstanding: tuple[int, float] | None = None  # (request id, wall time sent)
        self._request_id = 0
        self._first_request: float | None = None
        self._previous_command: np.ndarray | None = None
        self._homing: HomingSlide | None = None
        self._events: list[ModeEvent] = []

    # --- episode boundaries and operator input ----------------------------------------------------------------
    def start(self, seed: int, mode: Mode = Mode.AUTONOMOUS) -> None:
        """Seed the filter from the measured state and begin in `mode`, with fresh statistics."""
        first = self.robot.observe(cameras=False)
        self.safety.reset(first.stamp, first.joint_position, first.joint_velocity)
        self.modes = ModeManager(mode)
        self.executor.clear()
        self._outstanding = None
        self._latency = self.settings.initial_latency_s
        self._previous_command = first.joint_position.copy()
        self.new_episode(seed)

    def new_episode(self, seed: int) -> None:
        """Fresh statistics, request ids and task progress; the robot, the filter and the mode carry on."""
        self.seed = seed
        self.stats = EpisodeStats()
        self.step = 0
        self.progress = 0
        self._request_id = 0
        self._first_request = None

    def command(self, trigger: Trigger, detail: str = "operator") -> ModeEvent:
        """Operator input through the mode table; takes effect from the next tick."""
        now = self.robot.now()
        event = self.modes.handle(trigger, now, detail)
        self._record(event)
        if event.reseed:
            self.safety.reset(now, self.robot.observe(cameras=False).joint_position)
        if event.accepted:
            self._homing = None  # any accepted operator command (a HOLD included) ends a homing slide
        if event.accepted and event.after is Mode.TELEOP and event.before is not Mode.TELEOP:
            self.executor.clear()  # the plan belonged to the other commander
            self.handover.start(self.safety.state.command)
            if self.leader is not None:
                self.leader.takeover(self.progress, self.safety.state.command)
            self.stats.teleop_interventions += 1
        return event

    def begin_homing(self, pose: np.ndarray, speed_fraction: float = 0.3) -> None:
        """Slide to `pose` under a fraction of the speed caps (through the filter) while in an operator's HOLD."""
        pose = np.asarray(pose, dtype=np.float64)
        limits = self.safety.limits
        if pose.shape != (limits.dof,) or not np.all(np.isfinite(pose)):
            raise ValueError(f"a home pose needs {limits.dof} finite values, got {pose!r}")
        if np.any(pose < limits.soft_low) or np.any(pose > limits.soft_high):
            raise ValueError(f"home pose {pose.tolist()} is outside the position limits minus their margins")
        self._homing = HomingSlide(limits, self.safety.state.command, pose, speed_fraction)

    @property
    def homing(self) -> bool:
        return self._homing is not None

    def _record(self, event: ModeEvent) -> None:
        self.stats.mode_events.append(event)
        self._events.append(event)

    def _homing_target(self) -> np.ndarray | None:
        if self._homing is None:
            return None
        slide = self._homing
        target = slide.target(self.period)
        if slide.arrived and np.max(np.abs(self.safety.state.command - slide.pose)) <= 1e-9:
            self._homing = None  # the filter's command is on the pose: from the next tick, a plain hold there
        return target

    # --- one control tick -------------------------------------------------------------------------------------
    def tick(self) -> TickResult:
        robot, planner, modes, stats, executor, settings = (
            self.robot,
            self.planner,
            self.modes,
            self.stats,
            self.executor,
            self.settings,
        )
        period, safety = self.period, self.safety
        now = robot.now()
        observation = robot.observe(cameras=False)
        installed: tuple[int, Plan] | None = None
        submitted: tuple[int, PlanRequest] | None = None

        answer = planner.poll()
        if answer is not None and self._outstanding is not None and answer[0] == self._outstanding[0]:
            self._outstanding = None
            outcome = answer[1]
            stats.scores.extend(s for s in outcome.scores if np.isfinite(s))
            if outcome.plan is None:
                stats.rejected += 1
                executor.clear()  # an old plan must not resume the robot after a rejection
                self._record(modes.handle(Trigger.PLAN_REJECTED, now, outcome.reason))
            elif outcome.plan.end_time > now:
                stats.plans += 1
                stats.latencies_s.append(outcome.seconds)
                self._latency = 0.7 * self._latency + 0.3 * (now - outcome.plan.start_time)
                stats.dropped_actions += executor.install(outcome.plan, now, safety.state.command)
                installed = (answer[0], outcome.plan)

        waited = time.perf_counter() - self._outstanding[1] if self._outstanding else 0.0
        planner_lost = not planner.alive
        if planner_lost:
            self._outstanding = None
            if self.restart_planner is not None:
                self.restart_planner()  # returns at once; plans flow again when the new process is ready
        if (waited > settings.planner_timeout_s or planner_lost) and modes.mode is Mode.AUTONOMOUS:
            # Keep waiting for the late answer (a slow plan is still a plan); the robot holds meanwhile.
            stats.planner_faults += 1
            reason = "planner process ended" if planner_lost else f"no plan for {waited:.2f} s"
            self._record(modes.handle(Trigger.PLANNER_TIMEOUT, now, reason))
            executor.clear()

        wants_plan = modes.mode is Mode.AUTONOMOUS or (modes.holding_automatically and executor.plan is None)
        due = executor.target(now + period) is None if settings.synchronous else executor.needs_plan(now, self._latency)
        asking = wants_plan and self._outstanding is None and due and planner.ready
        frames = robot.observe(cameras=settings.cameras).frames if asking else {}
        # A camera that never delivered counts as stale too (a topic-fed robot may have none yet).
        timeout = self.frame_timeout
        stale = [c for c in settings.cameras if asking and (c not in frames or now - frames[c].stamp > timeout)]
        if stale and modes.mode is Mode.AUTONOMOUS:
            # Planning from an old picture would execute a plan for a world that has moved on: hold instead.
            self._record(modes.handle(Trigger.STALE_INPUT, now, f"stale frames from {stale}"))
            executor.clear()
        if frames and not stale:
            request = PlanRequest(
                time=now,
                frames={name: frames[name].image[None] for name in settings.cameras if name in frames},
                instruction=self.instruction,
                seed=self.seed * 10_000 + self._request_id,
                # Task progress, not wall time: ticks actually executed under a plan. A test-instrument world
                # model (the oracle) continues its script from there, not from where a robot that never waited
                # would be.
                privileged_state=self.privileged(self.progress, safety.state) if self.privileged else None,
            )
            self._request_id += 1
            if planner.submit(self._request_id, request):
                self._outstanding = (self._request_id, time.perf_counter())
                self._first_request = self._first_request or time.monotonic()
                submitted = (self._request_id, request)

        target = executor.target(now + period)
        if modes.holding_automatically and target is not None:
            event = modes.handle(Trigger.CAUSE_CLEARED, now, "a new plan arrived")
            self._record(event)
            if event.reseed:
                safety.reset(now, observation.joint_position)
        stamps = {"joint_state": observation.stamp}
        homing = False
        if modes.mode is Mode.TELEOP:
            reading = self.leader.read() if self.leader is not None else None
            if reading is None or now - reading[0] > self.teleop_timeout:
                self._record(modes.handle(Trigger.STALE_INPUT, now, "leader arms silent"))
                target = None
            else:
                target = self.handover.target(reading[1], period)
                stamps["teleop"] = reading[0]
            stats.teleop_ticks += 1
        elif modes.mode is Mode.HOLD and not modes.holding_automatically and self._homing is not None:
            target = self._homing_target()
            homing = True
        elif modes.mode is not Mode.AUTONOMOUS:
            target = None
        elif target is not None:
            stamps["plan"] = executor.plan.start_time  # a plan older than its timeout is not executed
        result = safety.step(now + period, target, measured=observation.joint_position, input_stamps=stamps)
        stats.interventions.update(item.check.value for item in result.interventions)
        if now - observation.stamp > self.state_timeout and modes.mode is Mode.AUTONOMOUS:
            # The filter already holds on the stale stamp; the mode records why and resumes when it is fresh.
            self._record(modes.handle(Trigger.STALE_INPUT, now, "joint state is stale"))
            executor.clear()
        fault = safety.fault or observation.fault
        if fault and modes.mode in (Mode.AUTONOMOUS, Mode.TELEOP, Mode.HOLD):
            # The filter already holds on a tracking fault; the mode makes it an operator matter (FAULT).
            trigger = Trigger.TRACKING_ERROR if safety.fault else Trigger.ROBOT_FAULT
            self._record(modes.handle(trigger, now, fault))
            executor.clear()
            self._homing = None
        stats.hold_ticks += target is None or homing
        stats.plan_age_s = now - executor.plan.start_time if executor.plan is not None else float("nan")
        self.progress += target is not None and not homing  # homing is not part of the task
        applied = robot.send(result)
        if self._previous_command is not None:
            change = float(np.max(np.abs(applied - self._previous_command)))
            stats.max_step_change = max(stats.max_step_change, change)
        self._previous_command = applied
        self.step += 1
        stats.steps = self.step
        if target is not None and stats.first_command_s is None and self._first_request is not None:
            stats.first_command_s = time.monotonic() - self._first_request
        events, self._events = tuple(self._events), []
        return TickResult(now, modes.mode, target, result, applied, events, installed, submitted, homing)


def run_autonomous_episode(
    robot: RobotInterface,
    planner: PlannerProcess,
    seed: int,
    settings: LoopSettings,
    privileged: Callable[[int, object], object] | None = None,
    on_tick: Callable[[int, ModeManager, EpisodeStats], None] | None = None,
    restart_planner: Callable[[], None] | None = None,
    operator: Callable[[int, float], Trigger | None] | None = None,
    leader: LeaderArms | None = None,
) -> EpisodeStats:
    """Run one episode from `robot.reset_episode(seed)`; the planner process must already be started.

    Paced on a monotonic clock (with `settings.pace`), counting every missed deadline. `stats.success` is the
    robot's own success check where it has one (simulation); elsewhere it stays False and an operator labels.
    """
    robot.reset_episode(seed)
    loop = AutonomousLoop(
        robot,
        planner,
        settings,
        privileged=privileged,
        restart_planner=restart_planner,
        leader=leader,
        instruction=robot.instruction,
    )
    loop.start(seed)
    stats = loop.stats
    period = loop.period
    deadline = tick_started = time.monotonic()
    for step in range(settings.max_steps):
        trigger = operator(step, robot.now()) if operator is not None else None
        if trigger is not None:  # operator input (keys in the CLI, services on ROS) goes through the same table
            loop.command(trigger)
        loop.tick()
        if on_tick is not None:
            on_tick(step, loop.modes, stats)
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
    stats.success = robot.success() is True
    return stats
