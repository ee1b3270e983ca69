"""PolicyNode: the ROS 2 lifecycle node that runs the autonomous loop on a robot reached through vendor topics.

The node is an adapter: the loop (`control.episode_runner.AutonomousLoop`), the mode table, the safety filter,
the planner process and the outcome log decide everything; the node converts messages, keeps caches, exposes
services and parameters, and publishes what an operator watches.

Lifecycle:
- configure: verify the bundle (a bad one is refused with the reason; the node stays unconfigured), open the
  outcome log, start the planner process, subscribe to cameras, follower and leader states and the instruction
  (and, only for the oracle test-instrument world model, the simulator's privileged state), create publishers,
  services and report timers;
- activate: refuse while in ESTOP or FAULT, without fresh joint states, or when another node publishes on a
  command topic; otherwise start streaming at the embodiment's control rate with a homing slide to `home_pose`
  (through the safety filter, under a fraction of the speed caps), then `mode_after_homing`;
- deactivate: HOLD, and keep streaming hold commands (a moving arm comes to rest under the caps and stays);
- cleanup / shutdown: stop streaming, end an open episode as aborted, stop the planner, close the log; the same
  when the process is asked to end (SIGINT, SIGTERM, or its launcher's death: node_main.py).

Configure's steps and the activation checks are :mod:`.policy_setup`, the services :mod:`.policy_services`, what
is published :mod:`.policy_reports` (mixins of this node); this module holds the lifecycle, the control tick and
the input callbacks.

Threads: a MultiThreadedExecutor. The control tick has its own mutually exclusive callback group; subscriptions
only write caches (reentrant group); services and reports take the loop lock, so a service waits at most one
tick and every mode change goes through the loop's mode table.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import Counter, deque

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import String, UInt8MultiArray

from eva_runtime.control.episode_runner import AutonomousLoop, episode_counters
from eva_runtime.control.held_command import seed_grippers
from eva_runtime.control.modes import Mode
from eva_runtime.control.modes import Trigger as ModeTrigger
from eva_runtime.control.planner_process import PlannerProcess
from eva_runtime.ros.parameters import POLICY_PARAMETERS, declare, read
from eva_runtime.ros.policy_reports import PolicyReports
from eva_runtime.ros.policy_services import OperatorServices
from eva_runtime.ros.policy_setup import ConfigureError, PolicyRuntime, PolicySetup

__all__ = ["PolicyNode", "main"]


class PolicyNode(OperatorServices, PolicyReports, PolicySetup, LifecycleNode):
    def __init__(self, node_name: str = "policy_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare(self, POLICY_PARAMETERS)
        self._lock = threading.RLock()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._input_group = ReentrantCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._report_group = MutuallyExclusiveCallbackGroup()
        self._runtime: PolicyRuntime | None = None
        self._starting_planner: PlannerProcess | None = None  # while configure waits for it to be ready
        self._control_timer = None
        self._active = False
        self._started = False  # the loop was seeded (first activation)
        self._instruction_topic = ""
        # Read here and whenever it is set, never from the control tick (a parameter read takes the node's lock).
        self._instruction_parameter = str(read(self, "episode.instruction"))
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._privileged: tuple[np.ndarray, float, float] | None = None  # (sim state, sim time, stamp): oracle only
        self.episode_began = -np.inf  # ROS time of the last start_episode: the oracle reads no older scene
        self._privileged_rejected = 0
        self._request_frames: dict[int, dict[str, np.ndarray]] = {}
        self._interventions: Counter[str] = Counter()  # since configure (episode stats reset per episode)
        self._periods: deque[float] = deque(maxlen=500)
        self._overruns = 0
        self._last_tick: float | None = None
        self._reported_rejections = 0
        self._last_log_update = 0.0
        self._published_mode: str | None = None
        self._mode_reason = ""
        self.tick_count = 0

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            runtime = self._build_runtime()
        except ConfigureError as error:
            self.get_logger().error(f"configure refused: {error}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self._runtime = runtime
            self._publish_mode()
        self.get_logger().info(f"configured: {runtime.model_id} on {runtime.robot.embodiment.name}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        runtime = self._runtime
        if runtime is None:
            return TransitionCallbackReturn.FAILURE
        try:
            self._check_activation(runtime)
        except ConfigureError as error:
            self.get_logger().error(f"activate refused: {error}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            loop = runtime.loop
            if not self._started:
                loop.start(int(read(self, "episode.seed")), Mode.HOLD, seed_from=self._held_seed(runtime))
                self._started = True
            elif loop.modes.mode is not Mode.HOLD:
                loop.command(ModeTrigger.OPERATOR_HOLD, "activate")
            home = read(self, "home_pose")
            if len(home):
                try:
                    loop.begin_homing(np.array(home, dtype=np.float64), float(read(self, "homing_speed_fraction")))
                except ValueError as error:
                    self.get_logger().error(f"activate refused: home_pose: {error}")
                    return TransitionCallbackReturn.FAILURE
            self._active = True
            if not loop.homing:
                self._after_homing(loop)
            self._publish_mode()
        if self._control_timer is None:
            period = runtime.robot.embodiment.control_period_s
            self._control_timer = self.create_timer(period, self._on_control_tick, callback_group=self._control_group)
        self.get_logger().info("active: homing" if runtime.loop.homing else "active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._active = False
            runtime = self._runtime
            if runtime is not None and runtime.loop.modes.mode in (Mode.AUTONOMOUS, Mode.TELEOP, Mode.HOLD):
                runtime.loop.command(ModeTrigger.OPERATOR_HOLD, "deactivate")
                self._publish_mode()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_runtime()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_runtime()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_runtime()
        return TransitionCallbackReturn.SUCCESS

    def release_runtime(self) -> None:
        """Stop streaming, end an open episode as aborted, stop the planner and close the log (idempotent).

        Also from another thread while the process ends (SIGTERM): a configure still waiting for its planner
        is failed at once by killing that planner, rather than finishing minutes later for nothing."""
        starting = self._starting_planner
        if starting is not None:
            starting.kill()
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None
        with self._lock:
            runtime, self._runtime = self._runtime, None
            self._active = self._started = False
            self._published_mode = None
        if runtime is None:
            return
        for destroy, handle in runtime.handles:
            destroy(handle)
        try:
            if runtime.recording is not None and runtime.session.episode_id is not None:
                runtime.recording.end(runtime.log, runtime.session.episode_id)  # what was recorded stays named
            runtime.session.close(episode_counters(runtime.loop.stats, runtime.loop.period))
        finally:
            runtime.planner.close()
            runtime.log.close()
            runtime.robot.disconnect()
            for publisher in runtime.publishers.values():
                self.destroy_publisher(publisher)

    def _reset_counters(self) -> None:
        """Counters and caches that describe one configuration of the node (diagnostics count from configure)."""
        self._privileged = None
        self._privileged_rejected = 0
        self._request_frames = {}
        self._interventions = Counter()
        self._periods.clear()
        self._overruns = 0
        self._last_tick = None
        self._reported_rejections = 0
        self._published_mode = None
        self._mode_reason = ""

    # --- the control tick ---------------------------------------------------------------------------------------
    def _on_control_tick(self) -> None:
        began = time.monotonic()
        if self._last_tick is not None:
            self._periods.append(began - self._last_tick)
        self._last_tick = began
        with self._lock:
            runtime = self._runtime
            if runtime is None or not self._started or not self.context.ok():
                return  # (after Ctrl-C the context is shut down before the executor stops calling back)
            loop = runtime.loop
            loop.instruction = self._instruction(runtime)
            was_homing = loop.homing
            try:
                tick = loop.tick()
            except Exception as error:  # a bug or a broken input must end in a held arm, never a dead node
                if self.context.ok():
                    self._fail_safe(loop, error)
                return
            if runtime.recording is not None:
                runtime.recording.tick(tick)
            if runtime.held is not None and tick.measured is not None:
                runtime.held.write(tick.result.command, tick.measured.joint_position)
            self.tick_count += 1
            self._interventions.update(tick.result.interventions.counts())
            if was_homing and not loop.homing and loop.modes.mode is Mode.HOLD:
                self.get_logger().info("homed")
                self._after_homing(loop)
            for event in tick.events:
                if event.accepted and event.after is not event.before:
                    self._mode_reason = f"{event.trigger.value}: {event.detail}"
                    self.get_logger().info(f"mode {event.before} -> {event.after} ({self._mode_reason})")
            self._publish_mode()
            self._publish_plan(runtime, tick)
        if time.monotonic() - began > runtime.loop.period:
            self._overruns += 1

    def _held_seed(self, runtime: PolicyRuntime):
        """The start-up seed rule: the grippers continue the previous node's held command when it is this hold's
        (control/held_command.py); the decision is logged either way."""
        if runtime.held is None:
            return None
        held, problem = runtime.held.read(float(read(self, "held_command_max_age_s")))
        limits = runtime.loop.safety.limits

        def seed(measured: np.ndarray) -> np.ndarray:
            position, why = seed_grippers(measured, held, limits.is_gripper, limits.hard_low, limits.hard_high)
            self.get_logger().info(f"{why}{f' ({problem})' if problem else ''}")
            return position

        return seed

    def _after_homing(self, loop: AutonomousLoop) -> None:
        if self._active and str(read(self, "mode_after_homing")) == "autonomous":
            loop.command(ModeTrigger.OPERATOR_AUTONOMOUS, "after homing")
            self._publish_mode()

    def _fail_safe(self, loop: AutonomousLoop, error: Exception) -> None:
        """FAULT (an operator matter) and a hold command through the filter, if the robot can still take one."""
        self.get_logger().error(f"control tick failed: {type(error).__name__}: {error}", throttle_duration_sec=1.0)
        try:
            # Through the loop: the FAULT reaches the episode's record like any other mode change.
            loop.robot.send(loop.fail_safe(f"control tick failed: {error}"))
        except Exception as send_error:
            self.get_logger().error(f"hold command failed too: {send_error}", throttle_duration_sec=1.0)
        self._publish_mode()

    def _instruction(self, runtime: PolicyRuntime) -> str:
        return self._instruction_parameter or self._instruction_topic

    def _on_parameters_set(self, parameters) -> None:
        for parameter in parameters:
            if parameter.name == "episode.instruction":
                self._instruction_parameter = str(parameter.value)
            if parameter.name == "robot_timeout_s" and self._runtime is not None:
                self._runtime.loop.robot_timeout = self._robot_timeout(self._runtime.loop)

    def _robot_timeout(self, loop: AutonomousLoop) -> float | None:
        """The parameter when set, else the embodiment's `timeouts_s.robot`, else none (no robot-silent FAULT)."""
        value = float(read(self, "robot_timeout_s"))
        return value if value > 0 else loop.robot.embodiment.safety.timeouts_s.get("robot")

    def _oracle_state(self, progress: int, filter_state: object):
        """The oracle world model's privileged view: the sim's latest state, the loop's progress and filter.

        The filter state's time moves to the simulation clock: the oracle re-simulates on the sim's time line.
        """
        from eva_runtime.sim.bimanual_sim import SimSnapshot
        from eva_runtime.world_model.oracle import OracleState

        latest = self._privileged
        if latest is None or latest[2] < self.episode_began:
            return None  # not yet a state from this episode's scene (the sim's ~/reset came just before it)
        state, sim_time, _ = latest
        return OracleState(SimSnapshot(state, sim_time), progress, dataclasses.replace(filter_state, time=sim_time))

    # --- inputs ---------------------------------------------------------------------------------------------------
    def _on_instruction(self, message: String) -> None:
        if message.data.strip():
            self._instruction_topic = message.data

    def _on_privileged_state(self, message: UInt8MultiArray) -> None:
        from eva_runtime.wire import WireError, unpack

        try:
            data = unpack(bytes(message.data))
            state = np.asarray(data["sim_state"], dtype=np.float64)
            sim_time, stamp = float(data["sim_time"]), float(data["stamp"])
        except (WireError, KeyError, TypeError, ValueError):
            self._privileged_rejected += 1
            return
        self._privileged = (state, sim_time, stamp)


USAGE = """usage: ros2 run eva_runtime policy_node --ros-args -p bundle:=<bundle dir> [-p name:=value ...]

The EVA policy as a ROS 2 lifecycle node: configure (verify the bundle, start the planner), activate (homing,
then streaming commands), deactivate (hold). Services under ~/ : mode/autonomous, mode/teleop, mode/hold, estop,
release, reset_fault, start_episode, end_episode/success|failure|aborted (std_srvs/Trigger). Parameters:
"""


def main(args: list[str] | None = None) -> int:
    from eva_runtime.ros.node_main import run_node

    return run_node(
        args, USAGE, POLICY_PARAMETERS, PolicyNode, 4, lambda node: node.release_runtime()
    )  # an open episode is closed as aborted; the planner process is stopped


if __name__ == "__main__":
    sys.exit(main())
