"""EpisodeRecorder: one episode as an MCAP file that Foxglove, the `mcap` tools and rosbags open without this package.

What is recorded (topics named as on the robot's ROS graph, so one Foxglove layout serves both):
- each camera, at the IDM's size, JPEG (`sensor_msgs/CompressedImage` on `<camera topic>/compressed`);
- the follower arms' measured joints (`sensor_msgs/JointState` on the embodiment's follower topics);
- the command the loop asked for and the command the safety filter sent (`/eva/command/requested`,
  `/eva/command/filtered`), so every clamp is visible as the gap between the two;
- every installed plan (`trajectory_msgs/JointTrajectory` on `/eva/plan`, stamped with the observation it was
  planned from) with its score, attempts and latency (`/eva/plan_info`, JSON text), and the imagined frames the
  planner sent back with it (`/eva/imagined/<camera>/compressed`, stamped at the time each frame depicts);
- mode changes and safety-filter interventions (`/eva/mode`, `/eva/interventions`, JSON text) and the recorder's
  own health once a second (`/diagnostics`).

The control thread only puts items on a bounded queue (never blocks, never encodes); a writer thread encodes
JPEG and CDR once and hands the bytes to the MCAP file (`record_sinks.McapFileSink`: the `mcap` library's
chunked, zstd-compressed writer, flushing every chunk to the file) and to any live sinks (`eva run --live`:
Foxglove over a WebSocket); a recorder without a path feeds only its live sinks. So a killed process leaves every
chunk written before it readable (an MCAP reader that streams records reads them; the summary at the end is what
is missing), and a full disk or any write error stops the file, not the loop nor the live sinks: the error and
the count of items not written are in the summary the episode's outcome row keeps. Items refused (a camera frame
of the wrong encoding or size) are counted, never written.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from eva_runtime.file_hash import file_sha256
from eva_runtime.records import ros2_schemas as msgs
from eva_runtime.records.record_sinks import McapFileSink, RecordSink, cdr_encoders

__all__ = [
    "EpisodeRecorder",
    "RecorderTopics",
    "RecordingError",
    "RecordingSummary",
    "check_recording_dir",
    "record_tick",
    "recorder_channels",
]

_QUEUE_ITEMS = 4096  # about 20 s of a 50 Hz loop's items: a writer stalled longer than that loses the excess
_JPEG_QUALITY = 90


class RecordingError(ValueError):
    """The recording cannot start (directory missing or not writable); raised before the robot moves."""


def check_recording_dir(directory: Path) -> Path:
    """Create `directory` if needed and prove it writable by writing a probe file; RecordingError otherwise."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".eva-write-probe-{threading.get_ident()}"
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as error:
        raise RecordingError(f"recording directory {directory} is not writable: {error}") from error
    return directory


@dataclass(frozen=True)
class RecorderTopics:
    """Where each stream goes and what it is called (from the embodiment and the bundle)."""

    joint_names: tuple[str, ...]  # all arms, embodiment order
    arms: Mapping[str, slice]  # arm -> its joints in the full vector
    follower: Mapping[str, str]  # arm -> measured joint state topic
    cameras: Mapping[str, str]  # camera -> image topic (the recorder appends /compressed)
    image_size: tuple[int, int]  # (height, width) written: the IDM's input size
    camera_size: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (h, w) accepted

    @classmethod
    def for_embodiment(cls, embodiment, image_size: tuple[int, int]) -> RecorderTopics:
        names: list[str] = []
        arms: dict[str, slice] = {}
        for arm in embodiment.arms:
            arms[arm.name] = slice(len(names), len(names) + len(arm.joints))
            names.extend(joint.name for joint in arm.joints)
        return cls(
            joint_names=tuple(names),
            arms=arms,
            follower=dict(embodiment.topics.follower_state),
            cameras={spec.name: spec.topic for spec in embodiment.cameras},
            image_size=(int(image_size[0]), int(image_size[1])),
            camera_size={spec.name: (spec.height, spec.width) for spec in embodiment.cameras},
        )


def recorder_channels(topics: RecorderTopics) -> dict[str, str]:
    """topic -> schema name of every channel a recording with `topics` can carry (imagined frames for every
    camera, since which cameras a world model imagines is known only from its plans)."""
    joint_state, text, image = "sensor_msgs/msg/JointState", "std_msgs/msg/String", "sensor_msgs/msg/CompressedImage"
    channels = {topic: joint_state for topic in topics.follower.values()}
    for camera, topic in topics.cameras.items():
        channels[f"{topic}/compressed"] = image
        channels[f"/eva/imagined/{camera}/compressed"] = image
    channels.update({"/eva/command/requested": joint_state, "/eva/command/filtered": joint_state})
    channels.update({"/eva/plan": "trajectory_msgs/msg/JointTrajectory", "/eva/plan_info": text})
    channels.update({"/eva/mode": text, "/eva/interventions": text})
    channels["/diagnostics"] = "diagnostic_msgs/msg/DiagnosticArray"
    return channels


@dataclass(frozen=True)
class RecordingSummary:
    path: str
    sha256: str | None  # None when the file could not be finished (write error)
    bytes: int
    messages: int
    dropped: int  # items the loop produced that are not in the file (queue full or writer stopped)
    refused: int  # items refused as malformed (wrong image encoding or size)
    error: str | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class EpisodeRecorder:
    """Record one episode to `path`; feed it from the control thread, then :meth:`close` for the summary."""

    def __init__(
        self,
        path: Path | None,
        topics: RecorderTopics,
        *,
        start_wall_s: float | None = None,
        sinks: Sequence[RecordSink] = (),
    ) -> None:
        """`path`: the MCAP file (None: no file, only `sinks`); `sinks`: live views that get every message too
        (owned by the caller: they outlive the episode)."""
        self.path = None if path is None else Path(path)
        self.topics = topics
        self._file = None if self.path is None else McapFileSink(self.path)
        self._sinks = tuple(sinks)
        self._encoders = cdr_encoders()
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_ITEMS)
        self._wall0 = time.time() if start_wall_s is None else start_wall_s
        self._robot0: float | None = None
        self.messages = 0
        self.dropped = 0
        self.refused = 0
        self.error: str | None = None
        self.live_error: str | None = None  # a live sink that failed, and was dropped, this episode
        self._last_diagnostics = -1.0
        name = self.path.name if self.path is not None else "live"
        self._thread = threading.Thread(target=self._drain, name=f"mcap:{name}", daemon=True)
        self._thread.start()

    # --- control thread: cheap, never blocks ------------------------------------------------------------------
    def _stamp(self, robot_time: float) -> int:
        """Robot clock -> nanoseconds on the wall clock of the episode's start (what Foxglove shows)."""
        if self._robot0 is None:
            self._robot0 = robot_time
        return round((self._wall0 + robot_time - self._robot0) * 1e9)

    def _put(self, item: tuple) -> None:
        if self.error is not None and not self._sinks:  # the file failed and nothing else wants the item
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def joints(
        self, robot_time: float, position: np.ndarray, velocity: np.ndarray | None, effort: np.ndarray | None = None
    ) -> None:
        stamp = self._stamp(robot_time)
        for arm, joints in self.topics.arms.items():
            topic = self.topics.follower.get(arm)
            if topic is not None:
                velocities = None if velocity is None else np.array(velocity[joints])
                efforts = None if effort is None else np.array(effort[joints])
                self._put(("joints", topic, stamp, joints, np.array(position[joints]), velocities, efforts))

    def command(self, robot_time: float, requested: np.ndarray | None, filtered: np.ndarray) -> None:
        stamp = self._stamp(robot_time)
        if requested is not None:
            self._put(("joints", "/eva/command/requested", stamp, slice(None), np.array(requested), None, None))
        self._put(("joints", "/eva/command/filtered", stamp, slice(None), np.array(filtered), None, None))

    def frame(self, robot_time: float, camera: str, image: np.ndarray, topic: str | None = None) -> None:
        """A camera frame (uint8 RGB, the camera's configured size); anything else is refused and counted."""
        expected = self.topics.camera_size.get(camera)
        valid = (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and (expected is None or tuple(image.shape[:2]) == tuple(expected) or topic is not None)
        )
        if not valid or (topic is None and camera not in self.topics.cameras):
            self.refused += 1
            return
        target = topic or f"{self.topics.cameras[camera]}/compressed"
        self._put(("image", target, self._stamp(robot_time), camera, image))

    def plan(self, request_id: int, plan) -> None:
        """An installed plan: the trajectory, its numbers, and the imagined frames it came with."""
        stamp = self._stamp(plan.start_time)
        self._put(("trajectory", "/eva/plan", stamp, np.array(plan.actions), float(plan.fps)))
        info = {
            "request_id": request_id,
            "score": None if not np.isfinite(plan.score) else float(plan.score),
            "attempts": int(plan.attempts),
            "latency_s": None if not np.isfinite(plan.latency_s) else float(plan.latency_s),
            "model_id": plan.model_id,
            "fps": float(plan.fps),
            "steps": len(plan.actions),
        }
        self._put(("text", "/eva/plan_info", stamp, json.dumps(info)))
        for camera, frames in (plan.metadata.get("rollout") or {}).items():
            count = len(frames)
            span = (len(plan.actions) - 1) / plan.fps
            for index, image in enumerate(frames):
                at = plan.start_time + (span * index / (count - 1) if count > 1 else 0.0)
                self.frame(at, camera, np.asarray(image), topic=f"/eva/imagined/{camera}/compressed")

    def event(self, topic: str, robot_time: float, value: Mapping) -> None:
        self._put(("text", topic, self._stamp(robot_time), json.dumps(dict(value), default=str)))

    def diagnostics(self, robot_time: float) -> None:
        if robot_time - self._last_diagnostics < 1.0:
            return
        self._last_diagnostics = robot_time
        level = 0 if not (self.dropped or self.refused or self.error) else (2 if self.error else 1)
        values = {"messages": self.messages, "dropped": self.dropped, "refused": self.refused}
        if self.live_error is not None:
            values["live_error"] = self.live_error
        status = (level, "eva_runtime: recorder", self.error or "recording", values)
        self._put(("diagnostics", "/diagnostics", self._stamp(robot_time), [status]))

    # --- writer thread ---------------------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None and not self._sinks:
                self.dropped += 1
                continue
            encoded = self._encode(item)
            if encoded is not None:
                self._deliver(item[1], *encoded, item[2])

    def _deliver(self, topic: str, schema: str, data: bytes, stamp: int) -> None:
        if self._file is None:
            self.messages += 1
        elif self.error is not None:
            self.dropped += 1
        else:
            try:
                self._file.write(topic, schema, data, stamp)
                self.messages += 1
            except OSError as error:  # full disk, a lost mount: the loop goes on, the recording stops here
                self.error = f"{type(error).__name__}: {error}"
                self.dropped += 1
        for sink in self._sinks:
            try:
                sink.write(topic, schema, data, stamp)
            except Exception as error:  # a broken live view must not stop this thread, which the file needs
                self._sinks = tuple(s for s in self._sinks if s is not sink)
                self.live_error = f"{type(sink).__name__}: {type(error).__name__}: {error}"

    def _encode(self, item: tuple) -> tuple[str, bytes] | None:
        """(schema name, CDR bytes) of a queued item; None for a frame the JPEG encoder refused."""
        kind, stamp = item[0], item[2]
        if kind == "joints":
            joints, position, velocity, effort = item[3], item[4], item[5], item[6]
            names = self.topics.joint_names[joints]
            schema, message = "sensor_msgs/msg/JointState", msgs.joint_state(stamp, names, position, velocity, effort)
        elif kind == "image":
            camera, image = item[3], item[4]
            height, width = self.topics.image_size
            if image.shape[:2] != (height, width):
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
            if not ok:
                self.refused += 1
                return None
            schema, message = "sensor_msgs/msg/CompressedImage", msgs.compressed_image(stamp, camera, encoded.tobytes())
        elif kind == "trajectory":
            actions, fps = item[3], item[4]
            schema = "trajectory_msgs/msg/JointTrajectory"
            message = msgs.joint_trajectory(stamp, self.topics.joint_names, actions, fps)
        elif kind == "diagnostics":
            schema, message = "diagnostic_msgs/msg/DiagnosticArray", msgs.diagnostic_array(stamp, item[3])
        else:
            schema, message = "std_msgs/msg/String", msgs.text(item[3])
        return schema, self._encoders[schema](message)

    # --- end -------------------------------------------------------------------------------------------------
    def close(self, timeout_s: float = 30.0) -> RecordingSummary:
        """Finish the file (summary and footer) and return what was recorded; safe to call once. The live sinks
        stay open (they are the caller's)."""
        self._queue.put(None)  # blocks only if the queue is full, and the writer is draining it
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.error = self.error or f"writer did not finish within {timeout_s} s"
        digest = None
        if self._file is not None:
            try:
                if self.error is None:
                    self._file.finish()
                self._file.close()
            except OSError as error:
                self.error = self.error or f"{type(error).__name__}: {error}"
        path = self.path
        size = path.stat().st_size if path is not None and path.exists() else 0
        if self.error is None and path is not None:
            digest = file_sha256(path)
        summary = (str(path or ""), digest, size, self.messages, self.dropped, self.refused, self.error)
        return RecordingSummary(*summary)


def record_tick(recorder: EpisodeRecorder, tick, frames: Mapping | None = None) -> None:
    """Everything one tick of the loop produced (a :class:`~eva_runtime.control.autonomous_loop.TickResult`),
    and the camera frames (camera -> CameraFrame) the driver grabbed for the recording this tick, if any."""
    if tick.measured is not None:
        measured = tick.measured
        recorder.joints(measured.stamp, measured.joint_position, measured.joint_velocity, measured.joint_effort)
    for camera, frame in (frames or {}).items():
        recorder.frame(frame.stamp, camera, frame.image)
    recorder.command(tick.time, tick.target, tick.result.command)
    if tick.installed is not None:
        recorder.plan(*tick.installed)
    for event in tick.events:
        value = {"trigger": event.trigger.value, "before": event.before.value, "after": event.after.value}
        recorder.event("/eva/mode", tick.time, {**value, "accepted": event.accepted, "detail": event.detail})
    if tick.result.interventions:
        checks = [item.check.value for item in tick.result.interventions]
        recorder.event("/eva/interventions", tick.time, {"checks": checks})
    recorder.diagnostics(tick.time)
