"""RecordNode: demonstrations recorded from the robot's ROS topics as vendor-layout HDF5 episodes.

It does on the robot what the AgileX ``collect_data.py`` does, and writes the layout of
:mod:`eva_runtime.records.hdf5_episodes` (the one the simulator's recorder writes) with its atomic ``write_episode``:
- the cameras of the embodiment file (``sensor_msgs/Image``, rgb8 or bgr8, converted to RGB) -> ``/observations/
  images/<camera>``; a frame of another encoding or size than the configured one is refused and counted;
- the follower joint states of both arms -> ``/observations/qpos``, and ``qvel`` / ``effort`` when every sampled
  message carried them (otherwise the file says unmeasured: never a mix of data and placeholder zeros);
- the leader joint states of both arms -> ``/action``, what the operator commanded, as collect_data.py records.
  On the classic convention these are the ``/master`` topics that the follower driver also obeys:
  ``resolve_topics`` withholds them from the policy node because it publishes there, but this node publishes no
  command, so it reads them. While the policy node commands on ``/master``, its filtered commands are the action.

``~/start`` and ``~/stop`` (std_srvs/Trigger) bracket an episode. Between them a timer samples at ``fps`` the newest
frame of each camera and the newest joint states. A sample is skipped, and counted, when an input is missing or
its newest message arrived more than ``max_input_age_s`` ago. Ages are receipt times on this machine's monotonic
clock, so a driver's clock offset can neither hide a stopped stream nor fake a stale one; a dropped camera
therefore never repeats its last frame silently. A camera slower than ``fps`` repeats frames, as sampling does.

On ``~/stop`` the episode is written as ``episode_{i}.hdf5`` (the index after the highest one in ``out_dir``) and
the reply names the path, the frames, the skipped samples and the refused messages. Refused: start while
recording, while an earlier episode is still unwritten, or into a directory that is not writable; stop while not
recording; an episode with no frame (nothing is written). A write that fails (disk full, directory gone) keeps
the episode: ``~/stop`` retries it, into ``out_dir`` as it is then. Samples stay in memory until the write (3
cameras of 640 x 480 at 30 Hz: about 83 MB/s), which ``max_frames`` bounds. An episode still recording when the
node shuts down is discarded with a warning: a demonstration cut off by Ctrl-C is not a complete one.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from eva_runtime.records.episode_take import EpisodeSettings, Take
from eva_runtime.records.hdf5_episodes import Episode, EpisodeError, episode_path, list_episodes, write_episode
from eva_runtime.records.mcap_recorder import RecordingError, check_recording_dir
from eva_runtime.ros.conventions import ARMS, CONVENTIONS, resolve_topics
from eva_runtime.ros.messages import MalformedMessageError, image_to_rgb, joint_state_to_arrays, seconds_to_stamp
from eva_runtime.ros.parameters import CAMERA_NAMES, RECORD_PARAMETERS, declare, read

__all__ = ["RecordNode", "main"]

COMPRESSIONS = {"": None, "gzip": "gzip", "lzf": "lzf"}


class RecordNode(Node):
    """The recorder. Subscriptions only fill the newest-message cache; the sampling timer and the services take
    one lock, so a sample is never added to an episode that stop has already taken."""

    def __init__(self, node_name: str = "record_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare(self, RECORD_PARAMETERS)
        from eva_runtime.embodiment import load_embodiment

        self.embodiment = load_embodiment(Path(str(read(self, "embodiment_file"))).expanduser())
        arms = [arm.name for arm in self.embodiment.arms]
        if not set(arms) <= set(ARMS):
            raise ValueError(f"the recorder reads the arms {ARMS} of the topic conventions; the embodiment has {arms}")
        self.ros_joint_names = (
            self.embodiment.topics.joint_names
            if self.embodiment.topics is not None
            else tuple(f"joint{i}" for i in range(len(self.embodiment.arms[0].joints)))
        )
        self.fps = float(read(self, "fps")) or min(camera.fps for camera in self.embodiment.cameras)
        self.max_input_age_s = float(read(self, "max_input_age_s"))
        if not (0 < self.fps < float("inf") and self.max_input_age_s > 0):
            raise ValueError(f"fps ({self.fps}) and max_input_age_s ({self.max_input_age_s}) must be positive")
        self.topics = self._input_topics()
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, object]] = {}  # input -> (monotonic receipt time, payload)
        self.refused: Counter[str] = Counter()  # topic -> refused messages since the node started
        self.last_refusal: dict[str, str] = {}
        self._reported_refusals = 0
        self._take: Take | None = None
        self._unsaved: tuple[Episode, Take] | None = None  # built but not written (the write failed)

        inputs = ReentrantCallbackGroup()
        for name, topic in self.topics.items():
            if name in self.image_sizes:
                subscription = (Image, topic, self._on_image(name, topic))
            else:
                subscription = (JointState, topic, self._on_joint_state(name, topic))
            self.create_subscription(*subscription, qos_profile_sensor_data, callback_group=inputs)
        services = MutuallyExclusiveCallbackGroup()  # a start never runs while a stop writes
        self.create_service(Trigger, "~/start", self._start, callback_group=services)
        self.create_service(Trigger, "~/stop", self._stop, callback_group=services)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(
            1.0 / float(read(self, "diagnostics_rate_hz")), self._publish_diagnostics, MutuallyExclusiveCallbackGroup()
        )
        self._sampler = self.create_timer(1.0 / self.fps, self._sample, MutuallyExclusiveCallbackGroup())
        self._sampler.cancel()  # runs only between start and stop

    def _input_topics(self) -> dict[str, str]:
        """Input name -> topic (cameras by camera name, joint states as ``<role>.<arm>``); also sets
        ``image_sizes``, the (height, width, 3) each camera's frames must have."""
        convention = str(read(self, "topic_convention"))
        roles = ("follower_state", "leader_state")
        overrides = {f"{r}.{a}": str(read(self, f"topics.{r}.{a}")) for r in roles for a in ARMS}
        resolved = resolve_topics(convention, overrides)  # validates the names; leader topics may be withheld
        topics = {f"follower_state.{arm.name}": resolved.follower_state[arm.name] for arm in self.embodiment.arms}
        for arm in self.embodiment.arms:
            leader = overrides[f"leader_state.{arm.name}"] or CONVENTIONS[convention].leader_state[arm.name]
            topics[f"leader_state.{arm.name}"] = leader
        self.image_sizes: dict[str, tuple[int, int, int]] = {}
        for camera in self.embodiment.cameras:
            override = str(read(self, f"topics.camera.{camera.name}")) if camera.name in CAMERA_NAMES else ""
            topics[camera.name] = override or camera.topic
            height = int(read(self, "camera_height")) or camera.height
            self.image_sizes[camera.name] = (height, int(read(self, "camera_width")) or camera.width, 3)
        return topics

    # --- inputs -----------------------------------------------------------------------------------------------
    def _refuse(self, topic: str, error: MalformedMessageError) -> None:
        self.get_logger().warning(f"refused a message on {topic}: {error}", throttle_duration_sec=2.0)
        with self._lock:
            self.refused[topic] += 1
            self.last_refusal[topic] = str(error)

    def _keep(self, name: str, payload: object) -> None:
        received = time.monotonic()
        with self._lock:
            self._latest[name] = (received, payload)

    def _on_image(self, camera: str, topic: str) -> Callable[[Image], None]:
        expected = self.image_sizes[camera]

        def receive(message: Image) -> None:
            try:
                image = image_to_rgb(message)
                if image.shape != expected:
                    got = f"{image.shape[1]}x{image.shape[0]}"
                    raise MalformedMessageError(f"{got} image, expected {expected[1]}x{expected[0]}")
            except MalformedMessageError as error:
                self._refuse(topic, error)
                return
            self._keep(camera, image)

        return receive

    def _on_joint_state(self, name: str, topic: str) -> Callable[[JointState], None]:
        def receive(message: JointState) -> None:
            try:
                reading = joint_state_to_arrays(message, self.ros_joint_names)
            except MalformedMessageError as error:
                self._refuse(topic, error)
                return
            self._keep(name, reading)

        return receive

    def _stale(self, now: float) -> list[str]:
        """Inputs with no message yet or none within max_input_age_s (caller holds the lock)."""
        return [
            name
            for name in self.topics
            if name not in self._latest or now - self._latest[name][0] > self.max_input_age_s
        ]

    # --- sampling ---------------------------------------------------------------------------------------------
    def _sample(self) -> None:
        with self._lock:
            take = self._take
            if take is None or take.full:
                return
            stale = self._stale(time.monotonic())
            if stale:
                take.skip(f"stale or missing: {', '.join(stale)}")
                return
            cameras = {camera.name: self._latest[camera.name][1] for camera in self.embodiment.cameras}
            arms = [arm.name for arm in self.embodiment.arms]
            take.add(
                cameras,
                [self._latest[f"follower_state.{arm}"][1] for arm in arms],
                [self._latest[f"leader_state.{arm}"][1][0] for arm in arms],
            )

    # --- services ---------------------------------------------------------------------------------------------
    def _start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return self._reply("start", response, self._try_start())

    def _reply(self, service: str, response: Trigger.Response, outcome: tuple[bool, str]) -> Trigger.Response:
        response.success, response.message = outcome
        # One call site per severity: rclpy refuses a logging call whose severity changes between calls.
        if response.success:
            self.get_logger().info(f"{service}: {response.message}")
        else:
            self.get_logger().warning(f"{service}: {response.message}")
        return response

    def _try_start(self) -> tuple[bool, str]:
        with self._lock:
            if self._take is not None:
                return False, f"already recording ({self._take.frames} frames so far): call ~/stop first"
        if self._unsaved is not None:
            episode, take = self._unsaved
            return False, (
                f"the previous episode ({episode.length} frames) is not written yet ({take.write_error}): "
                "call ~/stop to retry (out_dir may be changed first)"
            )
        try:
            settings = self._episode_settings()
        except ValueError as error:
            return False, str(error)
        with self._lock:
            self._take = Take(settings, sum(self.refused.values()))
            stale = self._stale(time.monotonic())
        self._sampler.reset()
        note = f"; no fresh message yet on {', '.join(stale)}" if stale else ""
        return True, f"recording into {settings.out_dir} at {self.fps:g} Hz{note}"

    def _episode_settings(self) -> EpisodeSettings:
        """The per-episode parameters, read now; ValueError (the reply's reason) when one is unusable."""
        compression = str(read(self, "compression"))
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
        max_frames = int(read(self, "max_frames"))
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0 (0: no limit), got {max_frames}")
        return EpisodeSettings(
            out_dir=self._checked_out_dir(),
            task=str(read(self, "task")),
            instruction=str(read(self, "instruction")),
            sim=bool(read(self, "sim")),
            compression=COMPRESSIONS[compression],
            max_frames=max_frames,
        )

    def _checked_out_dir(self) -> Path:
        out_dir = str(read(self, "out_dir")).strip()  # ValueError when never set
        if not out_dir:
            raise ValueError("parameter 'out_dir' is empty: set the directory the episodes go to")
        try:
            return check_recording_dir(Path(out_dir).expanduser())
        except RecordingError as error:
            raise ValueError(str(error)) from None

    def _stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return self._reply("stop", response, self._try_stop())

    def _try_stop(self) -> tuple[bool, str]:
        if self._unsaved is not None:
            return self._write(*self._unsaved)
        with self._lock:
            take, self._take = self._take, None
            refused = sum(self.refused.values())
        if take is None:
            return False, "not recording: call ~/start first"
        self._sampler.cancel()
        take.end(refused)
        if take.frames == 0:
            return False, f"no frame was sampled, nothing written ({take.summary(self.fps)})"
        try:
            episode = take.episode(self.embodiment, self.fps)
        except EpisodeError as error:
            return False, f"episode discarded, it cannot be stored: {error}"
        return self._write(episode, take)

    def _write(self, episode: Episode, take: Take) -> tuple[bool, str]:
        self._unsaved = None
        try:
            out_dir = self._checked_out_dir()
            existing = list_episodes(out_dir)
            index = int(existing[-1].stem.removeprefix("episode_")) + 1 if existing else 0
            path = write_episode(episode_path(out_dir, index), episode, compression=take.settings.compression)
        except (OSError, ValueError) as error:
            take.write_error = str(error)
            self._unsaved = (episode, take)  # kept: the next ~/stop retries
            return False, f"episode of {episode.length} frames not written ({error}): call ~/stop again to retry"
        return True, f"wrote {path}: {take.summary(self.fps)}"

    # --- reports ----------------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        with self._lock:
            now = time.monotonic()
            ages = {name: now - self._latest[name][0] if name in self._latest else float("inf") for name in self.topics}
            stale = self._stale(now)
            refused, last = dict(self.refused), dict(self.last_refusal)
            take = self._take
            frames, skipped = (take.frames, take.skipped) if take is not None else (0, 0)
            full = take is not None and take.full
        new_refusals = sum(refused.values()) - self._reported_refusals
        self._reported_refusals += new_refusals
        pending = self._unsaved  # one read: a service may replace it meanwhile
        unsaved = pending[0].length if pending is not None else 0
        problems = [f"stale: {', '.join(stale)}"] * bool(stale) + [f"{unsaved} frames unwritten"] * bool(unsaved)
        problems += [f"{new_refusals} messages refused"] * bool(new_refusals)
        state = f"recording ({frames} frames)" if take is not None else "idle"
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            name=f"{self.get_name()}: recording",
            message="; ".join([state, *problems]),
            hardware_id=self.embodiment.name,
        )
        values = {"recording": take is not None, "frames": frames, "skipped": skipped, "frame_limit_reached": full}
        values |= {"unwritten_frames": unsaved} | {f"{name}_age_s": f"{age:.3f}" for name, age in ages.items()}
        values |= {f"refused {topic}": n for topic, n in sorted(refused.items())}
        values |= {f"last {topic}": why for topic, why in sorted(last.items())}
        status.values = [KeyValue(key=key, value=str(value)) for key, value in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = seconds_to_stamp(self.get_clock().now().nanoseconds * 1e-9)
        self._diagnostics.publish(array)

    def close(self) -> None:
        """Stop sampling; an episode still recording is discarded (a cut-off demonstration is not complete)."""
        self._sampler.cancel()
        with self._lock:
            take, self._take = self._take, None
        pending, self._unsaved = self._unsaved, None
        lost = (take.frames if take is not None else 0) + (pending[0].length if pending is not None else 0)
        if lost:
            self.get_logger().warning(f"shutting down: {lost} recorded frames discarded, no episode written")


USAGE = """usage: ros2 run eva_runtime record_node --ros-args -p embodiment_file:=<yaml> -p out_dir:=<dir> [...]

Records vendor-layout HDF5 episodes (ACT / AgileX) from the camera, follower and leader topics between
~/start and ~/stop (std_srvs/Trigger). Parameters:
"""


def main(args: list[str] | None = None) -> int:
    from eva_runtime.ros.node_main import run_node

    # One thread: its callbacks are short and never wait on each other, and rclpy's MultiThreadedExecutor spins
    # hot enough to make the node's own inputs look stale (node_main.py).
    return run_node(args, USAGE, RECORD_PARAMETERS, RecordNode, 1, lambda node: node.close())


if __name__ == "__main__":
    sys.exit(main())
