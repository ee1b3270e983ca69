"""TopicRobot: a RobotInterface fed by ROS subscriptions (follower states, cameras, leader arms) and publishing the
safety filter's commands on the vendor command topics.

`observe()` returns the newest cached joint states and frames, stamped with their header stamps on the node clock
(a missing stamp, or one ahead of the receipt time, counts as the receipt time: an age is never understated), so
the control loop's staleness checks work exactly as in simulation. The runtime's clock is the node clock in
seconds since `connect()`: epoch seconds in a float64 resolve only ~0.2 us, which shows in the filter's per-tick
velocities; stamps on the wire stay absolute (integer nanoseconds, converted exactly).

Malformed messages (wrong joint count or names, non-finite values, unknown image encodings) are refused and
counted per topic; the cache keeps the last good message. `send()` publishes one JointState per arm, stamped with
the time the command is for (the filter's state time). Leader arms, when their topics are usable, are a
:class:`~eva_runtime.control.teleop.LeaderArms` input.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from eva_runtime.embodiment import Embodiment
from eva_runtime.robots.interface import CameraFrame, Observation, RobotError, RobotInterface, check_command
from eva_runtime.ros.conventions import ResolvedTopics
from eva_runtime.ros.messages import (
    MalformedMessageError,
    image_to_rgb,
    joint_state_to_vector,
    vector_to_joint_state,
)
from eva_runtime.safety import FilterResult

__all__ = ["COMMAND_QOS", "NO_PUBLISHER_EVENTS", "NO_SUBSCRIPTION_EVENTS", "TopicRobot"]

# Commands are few and small: reliable delivery, a short queue (a late command is worth less than the next one).
COMMAND_QOS = QoSProfile(depth=10)
# Entities a lifecycle node destroys at cleanup get no QoS event handlers. rclpy 9 adds event handlers to the
# executor's wait set without guarding against their destruction from another thread; destroying a publisher or
# subscription that has them while the executor builds its wait set ends `spin()` with InvalidHandle (seen in
# this project's tests). The cost is rclpy's "incompatible QoS" warning; a mismatch still shows in diagnostics as
# an input that never arrives.
NO_PUBLISHER_EVENTS = PublisherEventCallbacks(use_default_callbacks=False)
NO_SUBSCRIPTION_EVENTS = SubscriptionEventCallbacks(use_default_callbacks=False)


class _Leader:
    """The leader arms as the loop's LeaderArms input (read from the robot's subscription cache)."""

    def __init__(self, robot: TopicRobot) -> None:
        self._robot = robot

    def read(self) -> tuple[float, np.ndarray] | None:
        return self._robot.leader_reading()

    def takeover(self, progress: int, command: np.ndarray) -> None:
        pass  # a person moves the leader arms; nothing to prepare


class TopicRobot(RobotInterface):
    def __init__(
        self,
        node: Node,
        embodiment: Embodiment,
        topics: ResolvedTopics,
        camera_topics: Mapping[str, str],
        callback_group=None,
    ) -> None:
        self.node = node
        self.embodiment = embodiment
        self.topics = topics
        self.camera_topics = dict(camera_topics)
        self.callback_group = callback_group
        self.arm_names = tuple(arm.name for arm in embodiment.arms)
        self.ros_joint_names: tuple[str, ...] = (
            embodiment.topics.joint_names
            if embodiment.topics is not None
            else tuple(f"joint{i}" for i in range(len(embodiment.arms[0].joints)))
        )
        self._lock = threading.Lock()
        self._follower: dict[str, tuple[float, np.ndarray, np.ndarray | None]] = {}
        self._leader: dict[str, tuple[float, np.ndarray]] = {}
        self._frames: dict[str, CameraFrame] = {}
        self.rejected: Counter[str] = Counter()  # topic -> refused messages
        self.last_rejection: dict[str, str] = {}  # topic -> why the last one was refused
        self._subscriptions: list = []
        self._publishers: dict[str, object] = {}
        self._epoch_ns = 0  # node-clock nanoseconds at connect(): the runtime's time 0

    # --- RobotInterface ---------------------------------------------------------------------------------------
    def connect(self) -> None:
        self._epoch_ns = self.node.get_clock().now().nanoseconds
        for arm in self.arm_names:
            if len(self.ros_joint_names) != len(self.embodiment.arms[self.arm_names.index(arm)].joints):
                raise RobotError(f"arm {arm!r} has a different joint count than the topic joint names")
            self._subscribe(JointState, self.topics.follower_state[arm], self._on_follower(arm))
            if arm in self.topics.leader_state:
                self._subscribe(JointState, self.topics.leader_state[arm], self._on_leader(arm))
            self._publishers[arm] = self.node.create_publisher(
                JointState, self.topics.command[arm], COMMAND_QOS, event_callbacks=NO_PUBLISHER_EVENTS
            )
        for camera in self.embodiment.cameras:
            self._subscribe(Image, self.camera_topics[camera.name], self._on_image(camera.name))

    def observe(self, cameras: bool | Sequence[str] = True) -> Observation:
        with self._lock:
            follower = dict(self._follower)
            frames = dict(self._frames)
        missing = [arm for arm in self.arm_names if arm not in follower]
        if missing:
            topics = [self.topics.follower_state[arm] for arm in missing]
            raise RobotError(f"no joint state received yet on {topics}")
        known = [camera.name for camera in self.embodiment.cameras]
        wanted = known if cameras is True else [] if cameras is False else list(cameras)
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise RobotError(f"unknown camera(s) {unknown}; this robot has {known}")
        readings = [follower[arm] for arm in self.arm_names]
        velocities = [reading[2] for reading in readings]
        return Observation(
            stamp=min(reading[0] for reading in readings),  # the older arm decides the state's age
            joint_position=np.concatenate([reading[1] for reading in readings]),
            joint_velocity=None if any(v is None for v in velocities) else np.concatenate(velocities),
            frames={name: frames[name] for name in wanted if name in frames},
        )

    def send(self, result: FilterResult) -> np.ndarray:
        command = check_command(self.embodiment, result)
        if not self._publishers:
            raise RobotError("the topic robot is not connected")
        start = 0
        for arm_spec in self.embodiment.arms:
            count = len(arm_spec.joints)
            message = vector_to_joint_state(command[start : start + count], self.ros_joint_names, 0.0)
            message.header.stamp = self.to_stamp(result.state.time)
            self._publishers[arm_spec.name].publish(message)
            start += count
        return command.copy()

    def now(self) -> float:
        return (self.node.get_clock().now().nanoseconds - self._epoch_ns) * 1e-9

    def to_stamp(self, seconds: float) -> Time:
        """A runtime time (seconds since connect) as an absolute ROS stamp."""
        nanoseconds = self._epoch_ns + round(seconds * 1e9)
        return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)

    def from_stamp(self, stamp: Time) -> float:
        return (stamp.sec * 1_000_000_000 + stamp.nanosec - self._epoch_ns) * 1e-9

    def disconnect(self) -> None:
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        for publisher in self._publishers.values():
            self.node.destroy_publisher(publisher)
        self._subscriptions.clear()
        self._publishers.clear()

    # --- inputs -----------------------------------------------------------------------------------------------
    @property
    def leader(self) -> _Leader | None:
        """The leader arms as a LeaderArms input, or None when their topics are unusable (see conventions)."""
        return _Leader(self) if len(self.topics.leader_state) == len(self.arm_names) else None

    def leader_reading(self) -> tuple[float, np.ndarray] | None:
        with self._lock:
            readings = [self._leader.get(arm) for arm in self.arm_names]
        if any(reading is None for reading in readings):
            return None
        return min(r[0] for r in readings), np.concatenate([r[1] for r in readings])

    def frame_ages(self, now: float) -> dict[str, float]:
        """Seconds since each camera's newest frame (inf: none yet)."""
        with self._lock:
            frames = dict(self._frames)
        return {
            c.name: now - frames[c.name].stamp if c.name in frames else float("inf") for c in self.embodiment.cameras
        }

    def state_ages(self, now: float) -> dict[str, float]:
        with self._lock:
            follower = dict(self._follower)
        return {arm: now - follower[arm][0] if arm in follower else float("inf") for arm in self.arm_names}

    def rejections(self) -> tuple[dict[str, int], dict[str, str]]:
        with self._lock:
            return dict(self.rejected), dict(self.last_rejection)

    def _subscribe(self, kind: type, topic: str, callback: Callable) -> None:
        self._subscriptions.append(
            self.node.create_subscription(
                kind,
                topic,
                callback,
                qos_profile_sensor_data,
                callback_group=self.callback_group,
                event_callbacks=NO_SUBSCRIPTION_EVENTS,
            )
        )

    def _stamp(self, header) -> float:
        received = self.now()
        if header.stamp.sec == 0 and header.stamp.nanosec == 0:
            return received  # an unstamped message is as old as its arrival
        return min(self.from_stamp(header.stamp), received)

    def _refuse(self, topic: str, error: MalformedMessageError) -> None:
        with self._lock:
            self.rejected[topic] += 1
            self.last_rejection[topic] = str(error)

    def _on_follower(self, arm: str) -> Callable[[JointState], None]:
        topic = self.topics.follower_state[arm]

        def receive(message: JointState) -> None:
            try:
                position, velocity = joint_state_to_vector(message, self.ros_joint_names)
            except MalformedMessageError as error:
                self._refuse(topic, error)
                return
            reading = (self._stamp(message.header), position, velocity)
            with self._lock:
                self._follower[arm] = reading

        return receive

    def _on_leader(self, arm: str) -> Callable[[JointState], None]:
        topic = self.topics.leader_state[arm]

        def receive(message: JointState) -> None:
            try:
                position, _ = joint_state_to_vector(message, self.ros_joint_names)
            except MalformedMessageError as error:
                self._refuse(topic, error)
                return
            reading = (self._stamp(message.header), position)
            with self._lock:
                self._leader[arm] = reading

        return receive

    def _on_image(self, camera: str) -> Callable[[Image], None]:
        topic = self.camera_topics[camera]

        def receive(message: Image) -> None:
            try:
                image = image_to_rgb(message)
            except MalformedMessageError as error:
                self._refuse(topic, error)
                return
            frame = CameraFrame(image, self._stamp(message.header))
            with self._lock:
                self._frames[camera] = frame

        return receive
