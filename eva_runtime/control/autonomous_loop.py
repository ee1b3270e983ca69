"""The autonomous control loop: robot, planner, executor, modes and the safety filter, one tick at a time.

A tick is a pipeline; each phase is one method, read top to bottom:
1. sense: the robot's state and the planner's answer, health and waiting time;
2. plan: install the answer (or hold on a rejection), make a planner fault a HOLD, and ask for the next plan
   early enough that it lands before the current one runs out (async) or when it has run out (sync), from
   frames no older than their timeout, with the frames before them the model conditions on (frame_history.py);
3. command: one command source per mode (AUTONOMOUS: the executor; TELEOP: the leader arms through the
   handover ramp; an operator's HOLD with a homing slide: the slide; anything else: hold);
4. filter: the safety filter makes the command safe, and its verdict (stale joint state, tracking error, the
   robot's own fault) goes back through the mode table;
5. send the filter's result, and nothing else, to the robot; 6. account: the episode's statistics.
Every mode change, operator input included (:meth:`AutonomousLoop.command`, :meth:`AutonomousLoop.fail_safe`),
goes through the mode table and into the episode's record. Stamps come from the robot's clock; waiting for the
planner is on the injected `clock` (a simulated one in tests): no real time where behaviour is under test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from eva_runtime.control.episode_stats import EpisodeStats
from eva_runtime.control.executed_score import ExecutedScorer
from eva_runtime.control.executor import Plan
from eva_runtime.control.frame_history import FrameHistory
from eva_runtime.control.homing import HomingSlide
from eva_runtime.control.loop_settings import LoopSettings
from eva_runtime.control.modes import Mode, ModeEvent, ModeManager, Trigger
from eva_runtime.control.planner import PlanOutcome, PlanRequest, request_seed
from eva_runtime.control.planner_port import PlannerPort
from eva_runtime.control.reseed_check import reseed_problem
from eva_runtime.control.teleop import LeaderArms, TeleopHandover
from eva_runtime.robots.interface import Observation, RobotInterface
from eva_runtime.safety import FilterResult, SafetyFilter

__all__ = ["AutonomousLoop", "LoopSettings", "TickResult"]
SeedRule = Callable[[np.ndarray], np.ndarray]  # measured joints -> the filter's seed


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
    measured: Observation | None = None  # the joint state the tick started from (no frames)


@dataclass(frozen=True)
class Sensed:
    """Phase 1's reading: what the robot and the planner said at the start of the tick."""

    now: float  # robot clock
    observation: Observation
    answer: tuple[int, PlanOutcome] | None  # the answer to the outstanding request, if it came
    waited_s: float  # how long the outstanding request has been waiting (0 when none)
    planner_lost: bool


@dataclass(frozen=True)
class Command:
    """Phase 3's choice: the target for the filter (None: hold) and the stamps of the inputs it came from."""

    target: np.ndarray | None
    stamps: dict[str, float]
    homing: bool = False


class AutonomousLoop:
    """One robot's control loop. Call :meth:`start` once, then :meth:`tick` once per control period."""

    def __init__(
        self,
        robot: RobotInterface,
        planner: PlannerPort,
        settings: LoopSettings,
        *,
        privileged: Callable[[int, object], object] | None = None,
        restart_planner: Callable[[], None] | None = None,
        leader: LeaderArms | None = None,
        instruction: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.robot = robot
        self.planner = planner
        self.settings = settings
        self.privileged = privileged  # (progress, filter state) -> the oracle's state, or None: not yet, ask later
        self.restart_planner = restart_planner
        self.leader = leader
        self.instruction = instruction  # sent with every plan request; a driver may change it between ticks
        self.clock = clock
        self.period = robot.embodiment.control_period_s
        timeouts = robot.embodiment.safety.timeouts_s
        self.frame_timeout = timeouts.get("frame", 0.5)
        self.teleop_timeout = timeouts.get("teleop", 0.1)
        self.state_timeout = timeouts.get("joint_state", 0.1)
        # Joint state silent this long: the robot is lost, an operator matter (FAULT), not a hold. Only where set
        # (`timeouts_s.robot`): a busy 2-core ROS graph shows gaps of seconds (docs/ros.md), not operator resets.
        self.robot_timeout: float | None = timeouts.get("robot")
        self.frame_history = FrameHistory(settings.history_frames or 1, settings.history_fps, settings.cameras)
        self.safety = SafetyFilter.for_embodiment(robot.embodiment)
        self.executor = settings.executor(self.safety.limits)
        self.tracker = settings.tracker(self.safety.limits)
        self.handover = TeleopHandover(self.safety.limits)
        self.modes = ModeManager(Mode.HOLD)  # until start(): nothing may move before the filter is seeded
        self.stats = EpisodeStats()
        self.seed = 0
        self.step = 0
        self.progress = 0  # ticks executed under a commander's target: the task's progress (the oracle's clock)
        self._latency = settings.initial_latency_s
        # (request id, clock time sent, the request's robot time)
        self._outstanding: tuple[int, float, float] | None = None
        self._request_id = 0
        self._first_request: float | None = None
        self._previous_command: np.ndarray | None = None
        self._homing: HomingSlide | None = None
        self._events: list[ModeEvent] = []
        self._frames_stale_since: float | None = None  # a stale-frame hold ends only with a plan from newer frames

    # --- episode boundaries and operator input ----------------------------------------------------------------
    def start(self, seed: int, mode: Mode = Mode.AUTONOMOUS, seed_from: SeedRule | None = None) -> None:
        """Seed the filter from the measured state (`seed_from`: e.g. held grippers) and begin in `mode`."""
        first = self.robot.observe(cameras=False)
        position = first.joint_position if seed_from is None else seed_from(first.joint_position)
        self.safety.reset(first.stamp, position, first.joint_velocity)
        self.modes = ModeManager(mode)
        self.executor.clear()
        self._outstanding = None
        self._latency = self.settings.initial_latency_s
        self._previous_command, self._frames_stale_since = self.safety.state.command.copy(), None
        self.new_episode(seed)

    def new_episode(self, seed: int) -> None:
        """Fresh statistics, request ids and task progress; the robot, the filter and the mode carry on."""
        self.seed, self.stats = seed, EpisodeStats()
        reward, horizon = self.settings.executed_reward, self.settings.executed_horizon
        self._executed = ExecutedScorer(reward, 1.0 / self.period, horizon) if reward is not None else None
        if self._executed is not None:
            self.stats.executed_scores = self._executed.scores  # the same list: filled as windows complete
        self.step = self.progress = self._request_id = 0
        self._first_request = None
        self.frame_history.clear()  # the scene may have been reset: no frame of the last episode conditions a plan

    def input_problem(self, trigger: Trigger | None = None, measured: Observation | None = None) -> str | None:
        """Why `trigger` may not be taken now, or None. A commander (None: autonomy or teleop) is refused while the
        joint state is silent past the robot timeout; a briefly late one is not, the automatic hold covers it.
        Leaving ESTOP or FAULT (release, reset) re-seeds the filter from the joint state: refused while that is
        older than its own timeout or while an arm moves (control/reseed_check.py): either seed is a jump."""
        measured = self.robot.observe(cameras=False) if measured is None else measured
        age = self.robot.now() - measured.stamp
        if self.modes.reseeds(trigger):
            return reseed_problem(measured, age, self.safety.limits, self.period, self.state_timeout)
        commander = trigger in (None, Trigger.OPERATOR_AUTONOMOUS, Trigger.OPERATOR_TELEOP)
        if commander and self.robot_timeout is not None and not age <= self.robot_timeout:
            return f"joint state is stale: robot silent for {age:.2f} s"
        return None

    def command(self, trigger: Trigger, detail: str = "operator") -> ModeEvent:
        """Operator input through the mode table, checked by `input_problem`; takes effect from the next tick."""
        now, measured = self.robot.now(), self.robot.observe(cameras=False)
        problem = self.input_problem(trigger, measured)  # the reading checked is the reading a re-seed uses
        if problem is not None:
            event = self.modes.refuse(trigger, now, problem)
            self.stats.mode_events.append(event)
            self._events.append(event)
            return event
        event = self._handle(trigger, now, detail)
        if event.reseed:  # input_problem found the reading fresh and the arm at rest
            self.safety.reseed(now, measured.joint_position, self.period)
        if event.accepted:
            self._homing = None  # any accepted operator command (a HOLD included) ends a homing slide
        if event.accepted and event.after is Mode.TELEOP and event.before is not Mode.TELEOP:
            self.executor.clear()  # the plan belonged to the other commander
            self.handover.start(self.safety.state.command)
            if self.leader is not None:
                self.leader.takeover(self.progress, self.safety.state.command)
            self.stats.teleop_interventions += 1
        return event

    def fail_safe(self, reason: str) -> FilterResult:
        """A driver's last resort when a tick raised: FAULT through the mode table (recorded like any mode
        change), no plan, and a hold through the filter, which the caller sends."""
        now = self.robot.now()
        self._handle(Trigger.ROBOT_FAULT, now, reason)
        self.executor.clear()
        self._homing = None
        return self.safety.step(now + self.period, None)

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

    def _handle(self, trigger: Trigger, now: float, detail: str) -> ModeEvent:
        event = self.modes.handle(trigger, now, detail)
        self.stats.mode_events.append(event)
        self._events.append(event)
        return event

    # --- one control tick -------------------------------------------------------------------------------------
    def tick(self) -> TickResult:
        sensed = self.sense()
        installed = self.take_answer(sensed)
        self.watch_planner(sensed)
        submitted = self.request_plan(sensed)
        command = self.choose_command(sensed)
        result = self.filter(sensed, command)
        applied = self.robot.send(result)
        self.account(sensed, command, applied)
        events, self._events = tuple(self._events), []
        return TickResult(
            sensed.now,
            self.modes.mode,
            command.target,
            result,
            applied,
            events,
            installed,
            submitted,
            command.homing,
            sensed.observation,
        )

    def sense(self) -> Sensed:
        now = self.robot.now()
        observation = self.robot.observe(cameras=False)
        self.frame_history.keep(self.robot, now)
        answer = self.planner.poll()
        if answer is not None and (self._outstanding is None or answer[0] != self._outstanding[0]):
            answer = None  # an answer to a request this loop no longer waits for
        waited = self.clock() - self._outstanding[1] if self._outstanding and answer is None else 0.0
        return Sensed(now, observation, answer, waited, not self.planner.alive)

    def take_answer(self, sensed: Sensed) -> tuple[int, Plan] | None:
        """Install the awaited plan, or hold on a rejection; an answer that came too late is dropped."""
        if sensed.answer is None:
            return None
        requested_at = self._outstanding[2]
        self._outstanding = None
        request_id, outcome = sensed.answer
        now, stats = sensed.now, self.stats
        stats.scores.extend(s for s in outcome.scores if np.isfinite(s))
        if outcome.plan is None:
            stats.rejected += 1
            self.executor.clear()  # an old plan must not resume the robot after a rejection
            self._handle(Trigger.PLAN_REJECTED, now, outcome.reason)
            return None
        # Sync: the robot held since the request, so action 0 is now (stamped then, the executor would skip into it).
        synchronous, skip = self.settings.synchronous, self.settings.synchronous_skip_s
        plan = replace(outcome.plan, start_time=now - skip) if synchronous else outcome.plan
        # Late or not, the answer says how slow the planner is: its latency and the loop's estimate count it.
        stats.latencies_s.append(outcome.seconds)
        self._latency = 0.7 * self._latency + 0.3 * (now - requested_at)
        if plan.end_time <= now:  # all of it is in the past: counted, never executed
            stats.expired_plans += 1
            return None
        stats.plans += 1
        stats.dropped_actions += self.executor.install(plan, now, self.safety.state.command)
        return request_id, plan

    def watch_planner(self, sensed: Sensed) -> None:
        """A dead planner is restarted; a dead or silent one makes an autonomous robot hold (the late answer is
        still taken if it comes: a slow plan is still a plan)."""
        if sensed.planner_lost:
            self._outstanding = None
            if self.restart_planner is not None:
                self.restart_planner()  # returns at once; plans flow again when the new process is ready
        timed_out = sensed.waited_s > self.settings.planner_timeout_s
        if (timed_out or sensed.planner_lost) and self.modes.mode is Mode.AUTONOMOUS:
            self.stats.planner_faults += 1
            reason = "planner process ended" if sensed.planner_lost else f"no plan for {sensed.waited_s:.2f} s"
            self._handle(Trigger.PLANNER_TIMEOUT, sensed.now, reason)
            self.executor.clear()

    def request_plan(self, sensed: Sensed) -> tuple[int, PlanRequest] | None:
        modes, executor, settings, now = self.modes, self.executor, self.settings, sensed.now
        wants_plan = modes.mode is Mode.AUTONOMOUS or (modes.holding_automatically and executor.plan is None)
        if settings.synchronous:
            due = executor.target(now + self.period) is None
        else:
            # A plan conditioned on the committed frames is asked for while the current one still covers them.
            due = executor.needs_plan(now, max(self._latency, settings.committed_frames / settings.history_fps))
        if not (wants_plan and self._outstanding is None and due and self.planner.ready):
            return None
        frames = self.robot.observe(cameras=settings.cameras).frames
        # A camera that never delivered counts as stale too (a topic-fed robot may have none yet).
        stale = [c for c in settings.cameras if c not in frames or now - frames[c].stamp > self.frame_timeout]
        if stale:
            if modes.mode is Mode.AUTONOMOUS:
                # Planning from an old picture would execute a plan for a world that has moved on: hold instead.
                self._handle(Trigger.STALE_INPUT, now, f"stale frames from {stale}")
                executor.clear()
                self._frames_stale_since = now
            return None
        # Task progress: ticks executed under a plan, where the oracle (a test instrument) continues its script.
        privileged = self.privileged(self.progress, self.safety.state) if self.privileged else None
        if self.privileged and privileged is None:
            return None
        request = PlanRequest(
            time=now,
            frames=self.frame_history.window({name: frames[name] for name in settings.cameras}),
            instruction=self.instruction,
            seed=request_seed(self.seed, self._request_id),
            privileged_state=privileged,
            committed=self.committed_frames(now) if settings.committed_frames else None,
        )
        self._request_id += 1
        if not self.planner.submit(self._request_id, request):
            return None
        self._outstanding = (self._request_id, self.clock(), now)
        self._first_request = self._first_request or self.clock()
        return self._request_id, request

    def committed_frames(self, now: float) -> dict[str, np.ndarray] | None:
        """The executing plan's imagined frames for the next `committed_frames` frame times after `now`: what the
        robot will carry out while the next plan is made. None when no plan with its frames covers them (after a
        hold, at the start): the next plan then starts from the observation alone."""
        plan, count = self.executor.plan, self.settings.committed_frames
        imagined = plan.metadata.get("imagined") if plan is not None else None
        if not imagined:
            return None
        first = round((now - plan.start_time) * plan.fps) + 1  # frame k is imagined for start + k / fps
        if first < 1 or any(first + count > len(video) for video in imagined.values()):
            return None
        return {camera: np.asarray(video[first : first + count]) for camera, video in imagined.items()}

    def choose_command(self, sensed: Sensed) -> Command:
        modes, now = self.modes, sensed.now
        target = self.executor.target(now + self.period)
        if modes.holding_automatically and target is not None and self._hold_cause_cleared(sensed):
            self._handle(Trigger.CAUSE_CLEARED, now, "a new plan arrived and the inputs are fresh")
            self._frames_stale_since = None  # (an automatic hold never follows ESTOP or FAULT: nothing to re-seed)
        stamps = {"joint_state": sensed.observation.stamp}
        if modes.mode is Mode.TELEOP:
            self.stats.teleop_ticks += 1
            reading = self.leader.read() if self.leader is not None else None
            if reading is None or now - reading[0] > self.teleop_timeout:
                self._handle(Trigger.STALE_INPUT, now, "leader arms silent")
                return Command(None, stamps)
            return Command(self.handover.target(reading[1], self.period), {**stamps, "teleop": reading[0]})
        if modes.mode is Mode.HOLD and not modes.holding_automatically and self._homing is not None:
            return Command(self._homing_target(), stamps, homing=True)
        if modes.mode is not Mode.AUTONOMOUS or target is None:
            return Command(None, stamps)
        if self.tracker is not None:  # within a share of the caps, so the filter below is a net (cap_tracker.py)
            target = self.tracker.follow(now + self.period, target, self.safety.state, self.stats.tracker_changes)
        # A plan older than its timeout is not executed: the filter checks the plan's stamp.
        return Command(target, {**stamps, "plan": self.executor.plan.start_time})

    def _hold_cause_cleared(self, sensed: Sensed) -> bool:
        """An automatic hold ends only when its own cause has gone: the joint state is fresh, and after stale
        frames the plan was made from frames newer than the hold (not an answer to an older request)."""
        if not sensed.now - sensed.observation.stamp <= self.state_timeout:
            return False
        since = self._frames_stale_since
        return since is None or self.executor.plan.start_time > since

    def _homing_target(self) -> np.ndarray:
        slide, target = self._homing, self._homing.target(self.period)
        if slide.arrived and np.max(np.abs(self.safety.state.command - slide.pose)) <= 1e-9:
            self._homing = None  # the filter's command is on the pose: from the next tick, a plain hold there
        return target

    def filter(self, sensed: Sensed, command: Command) -> FilterResult:
        """The filter's result for this tick; its verdict on the inputs goes through the mode table."""
        now, modes, safety = sensed.now, self.modes, self.safety
        measured = sensed.observation.joint_position
        result = safety.step(now + self.period, command.target, measured=measured, input_stamps=command.stamps)
        self.stats.interventions.update(counts := result.interventions.counts())  # builds no record
        nominal = modes.mode is Mode.AUTONOMOUS and command.target is not None and not command.homing
        if nominal:
            self.stats.nominal_joint_ticks += len(measured)
            self.stats.nominal_interventions.update(counts)
        if self._executed is not None:
            self._executed.add(result.command if nominal else None)
        age = now - sensed.observation.stamp
        if age > self.state_timeout and modes.mode is Mode.AUTONOMOUS:
            # The filter already holds on the stale stamp; the mode records why and resumes when it is fresh.
            self._handle(Trigger.STALE_INPUT, now, "joint state is stale")
            self.executor.clear()
        fault = safety.fault or sensed.observation.fault
        if not fault and self.robot_timeout is not None and not age <= self.robot_timeout:
            fault = f"robot silent: no joint state for {age:.2f} s"
        if fault and modes.mode in (Mode.AUTONOMOUS, Mode.TELEOP, Mode.HOLD):
            # The filter already holds on a tracking fault; the mode makes it an operator matter (FAULT).
            self._handle(Trigger.TRACKING_ERROR if safety.fault else Trigger.ROBOT_FAULT, now, fault)
            self.executor.clear()
            self._homing = None
        return result

    def account(self, sensed: Sensed, command: Command, applied: np.ndarray) -> None:
        stats, executor = self.stats, self.executor
        holding = command.target is None or command.homing
        stats.hold_ticks += holding
        stats.plan_age_s = sensed.now - executor.plan.start_time if executor.plan is not None else float("nan")
        self.progress += not holding  # homing is not part of the task
        if self._previous_command is not None:
            stats.max_step_change = max(stats.max_step_change, float(np.max(np.abs(applied - self._previous_command))))
        self._previous_command = applied
        self.step = stats.steps = self.step + 1
        if command.target is not None and stats.first_command_s is None and self._first_request is not None:
            stats.first_command_s = self.clock() - self._first_request
