"""How the policy node sets itself up: configure builds its runtime, activate checks it may start commanding.

A mixin of :class:`~eva_runtime.ros.policy_node.PolicyNode` (it reads the node's parameters and creates its
publishers, subscriptions, services and timers). Configure verifies the bundle, opens the outcome log, starts the
planner process and connects the robot's topics, undoing what was started when a later step fails; every refusal
is a :class:`ConfigureError` whose message is what the operator needs to fix.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String, UInt8MultiArray
from trajectory_msgs.msg import JointTrajectory

from eva_runtime.control.episode_runner import AutonomousLoop, LoopSettings
from eva_runtime.control.gripper_latch import checked_band
from eva_runtime.control.held_command import HeldCommandFile
from eva_runtime.control.modes import Mode
from eva_runtime.control.planner_process import PlannerProcess
from eva_runtime.records.episode_recording import EpisodeRecording
from eva_runtime.records.episode_session import EpisodeSession
from eva_runtime.records.mcap_recorder import RecordingError, check_recording_dir
from eva_runtime.records.outcome_log import OutcomeLog
from eva_runtime.ros.conventions import ResolvedTopics, resolve_topics
from eva_runtime.ros.parameters import CAMERA_NAMES, POLICY_PARAMETERS, read
from eva_runtime.ros.topic_robot import NO_PUBLISHER_EVENTS, NO_SUBSCRIPTION_EVENTS, TopicRobot

__all__ = ["MODE_QOS", "ConfigureError", "PolicyRuntime", "PolicySetup"]

MODE_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)  # late joiners get the current mode


class ConfigureError(RuntimeError):
    """Configuration cannot succeed; the message is what the operator needs to fix."""


@dataclass
class PolicyRuntime:
    """Everything configure builds; cleanup tears it down in reverse."""

    loop: AutonomousLoop
    robot: TopicRobot
    planner: PlannerProcess
    log: OutcomeLog
    session: EpisodeSession
    topics: ResolvedTopics
    model_id: str
    oracle: bool
    recording: EpisodeRecording | None = None  # one MCAP per episode when `record_dir` is set
    held: HeldCommandFile | None = None  # the last command, for a restarted node's grippers (held_command.py)
    publishers: dict = field(default_factory=dict)
    handles: list = field(default_factory=list)  # (destroy function, handle): services, timers, subscriptions


class PolicySetup:
    """Configure and activation steps of the policy node (mixed into it)."""

    def _build_runtime(self) -> PolicyRuntime:
        from eva_runtime import __version__
        from eva_runtime.records.outcome_log import OutcomeLogError

        deployment, embodiment, topics, settings = self._configured_deployment()
        camera_topics = {}
        for camera in embodiment.cameras:
            override = str(read(self, f"topics.camera.{camera.name}")) if camera.name in CAMERA_NAMES else ""
            camera_topics[camera.name] = override or camera.topic
        oracle, model_id = deployment.oracle, deployment.model_id
        log_path = Path(str(read(self, "log_path"))).expanduser()
        record_dir = str(read(self, "record_dir")).strip()
        if record_dir:
            try:
                check_recording_dir(Path(record_dir).expanduser())  # refused before anything starts
            except RecordingError as error:
                raise ConfigureError(str(error)) from None
        with ExitStack() as undo:  # whatever was started is stopped again if a later step fails
            try:
                log = OutcomeLog(log_path)
            except OutcomeLogError as error:
                raise ConfigureError(str(error)) from None
            undo.callback(log.close)
            planner = self._starting_planner = PlannerProcess(deployment.spec)  # release_runtime may stop it
            undo.callback(planner.close)
            try:
                planner.start(wait_s=float(read(self, "planner_start_timeout_s")))
            except RuntimeError as error:
                raise ConfigureError(f"planner process: {error}") from None
            finally:
                self._starting_planner = None
            robot = TopicRobot(self, embodiment, topics, camera_topics, callback_group=self._input_group)
            undo.callback(robot.disconnect)
            robot.connect()
            loop = AutonomousLoop(
                robot,
                planner,
                settings,
                privileged=self._oracle_state if oracle else None,
                restart_planner=lambda: planner.alive or planner.start(wait_s=None),
                leader=robot.leader,
            )
            loop.robot_timeout = self._robot_timeout(loop)
            session = EpisodeSession(log, embodiment.name, deployment.bundle.hashes(), model_id, __version__)
            runtime = PolicyRuntime(loop, robot, planner, log, session, topics, model_id, oracle)
            held_path = str(read(self, "held_command_path")).strip() or log_path.with_suffix(".held_command.json")
            runtime.held = HeldCommandFile(held_path, embodiment.name, embodiment.dof)
            if record_dir:
                idm = deployment.bundle.manifest.idm
                runtime.recording = EpisodeRecording(Path(record_dir).expanduser(), robot, idm.image_size, idm.fps)
            self._create_interfaces(runtime, embodiment)
            undo.pop_all()
        self._reset_counters()
        if topics.leader_unavailable:
            self.get_logger().warning(f"teleop unavailable: {topics.leader_unavailable}")
        return runtime

    def _configured_deployment(self):
        """(deployment, embodiment, topics, loop settings) from the parameters; ConfigureError on a bad one."""
        from eva_runtime.bundle import BundleError
        from eva_runtime.control.deployment import Deployment
        from eva_runtime.embodiment import EmbodimentError, load_embodiment

        try:
            if not str(read(self, "bundle")):
                raise ValueError("parameter 'bundle' is empty: pass bundle:=/path/to/bundle")
            embodiment_file = str(read(self, "embodiment_file"))
            robot_embodiment = load_embodiment(Path(embodiment_file).expanduser()) if embodiment_file else None
            deployment = Deployment.from_bundle(
                Path(str(read(self, "bundle"))).expanduser(),
                str(read(self, "episode.task")),
                embodiment=robot_embodiment,
                attempts=int(read(self, "plan_attempts")),
                threshold=float(read(self, "plan_threshold")),
            )
            topics = resolve_topics(
                str(read(self, "topic_convention")),
                {name.removeprefix("topics."): str(read(self, name)) for name in _joint_topic_parameters()},
            )
            embodiment = robot_embodiment or deployment.bundle.embodiment
            settings = deployment.loop_settings(self._loop_settings(deployment.bundle), embodiment)
        except (BundleError, EmbodimentError, ValueError) as error:
            raise ConfigureError(str(error)) from None
        return deployment, embodiment, topics, settings

    def _loop_settings(self, bundle) -> LoopSettings:
        return LoopSettings(
            max_steps=0,  # unused: the node runs until deactivated
            synchronous=bool(read(self, "synchronous")),
            execute_fraction=float(read(self, "execute_fraction")),
            interpolation=str(read(self, "interpolation")),
            blend_s=float(read(self, "blend_s")),
            gripper_latch=checked_band(latch) if (latch := list(read(self, "gripper_latch"))) else None,
            track_headroom=headroom if (headroom := float(read(self, "track_headroom"))) != 0.0 else None,
            planner_timeout_s=float(read(self, "planner_timeout_s")),
            initial_latency_s=float(read(self, "initial_latency_s")),
            cameras=tuple(bundle.manifest.idm.cameras),  # the IDM's cameras are the ones a plan is made from
        )

    def _create_interfaces(self, runtime: PolicyRuntime, embodiment) -> None:
        publishers = runtime.publishers
        from diagnostic_msgs.msg import DiagnosticArray

        for name, kind, topic, qos in (
            ("mode", String, "~/mode", MODE_QOS),
            ("status", String, "~/status", 10),
            ("rollout", Image, "~/rollout", qos_profile_sensor_data),
            ("plan", JointTrajectory, "~/plan", 10),
            ("diagnostics", DiagnosticArray, "/diagnostics", 10),
        ):
            publishers[name] = self.create_publisher(kind, topic, qos, event_callbacks=NO_PUBLISHER_EVENTS)
        handles = runtime.handles
        self._create_services(runtime)
        instruction_topic = str(read(self, "topics.instruction")) or (
            embodiment.topics.instruction if embodiment.topics is not None else "/instruction"
        )
        subscriptions = [(String, instruction_topic, self._on_instruction, 10)]
        if runtime.oracle:
            topic = str(read(self, "topics.privileged_state"))
            subscriptions.append((UInt8MultiArray, topic, self._on_privileged_state, qos_profile_sensor_data))
        for kind, topic, callback, qos in subscriptions:
            subscription = self.create_subscription(
                kind, topic, callback, qos, callback_group=self._input_group, event_callbacks=NO_SUBSCRIPTION_EVENTS
            )
            handles.append((self.destroy_subscription, subscription))
        for rate, callback in (
            (float(read(self, "diagnostics_rate_hz")), self._publish_diagnostics),
            (float(read(self, "status_rate_hz")), self._publish_status),
        ):
            handles.append((self.destroy_timer, self.create_timer(1.0 / rate, callback, self._report_group)))

    def _check_activation(self, runtime: PolicyRuntime) -> None:
        mode = runtime.loop.modes.mode
        if mode in (Mode.ESTOP, Mode.FAULT):
            action = "release" if mode is Mode.ESTOP else "reset_fault"
            raise ConfigureError(f"the runtime is in {mode.value.upper()}: call ~/{action} first")
        timeout = float(read(self, "activation_timeout_s"))
        deadline = time.monotonic() + timeout
        limit = runtime.robot.embodiment.safety.timeouts_s.get("joint_state", 0.1)
        while True:
            ages = runtime.robot.state_ages(runtime.robot.now())
            fresh = all(age <= limit for age in ages.values())
            if fresh and (not runtime.oracle or self._privileged is not None):
                break
            if time.monotonic() > deadline:
                stale = {runtime.topics.follower_state[arm]: age for arm, age in ages.items() if not age <= limit}
                what = f"no fresh joint state on {sorted(stale)}" if stale else "no privileged simulator state"
                raise ConfigureError(f"{what} within {timeout} s")
            time.sleep(0.02)
        if not bool(read(self, "allow_shared_command_topic")):
            for topic in runtime.topics.command.values():
                others = self.count_publishers(topic) - 1  # minus our own publisher
                if others > 0:
                    raise ConfigureError(
                        f"{others} other publisher(s) on the command topic {topic}: two commanders would fight "
                        "over the arms (set allow_shared_command_topic to override)"
                    )


def _joint_topic_parameters() -> list[str]:
    roles = ("follower_state", "leader_state", "command")
    return [s.name for s in POLICY_PARAMETERS if s.name.count(".") == 2 and s.name.split(".")[1] in roles]
