"""Imagination vs reality: an episode's MCAP recording as a video of what the camera saw beside what the world
model imagined for that moment, over the commanded and measured joint traces (`eva view`).

Pure functions in three steps: `read_episode` (recording -> arrays), `compose_frames` (arrays -> RGB frames), and
`write_video` (frames -> GIF through Pillow, or MP4 through OpenCV). One output frame per recorded camera frame,
at the camera's rate. The imagined frame shown at time t is the latest one, depicting a time <= t, of the most
recent plan stamped at or before t (the plan the loop was executing, from the observation it was planned
from); before the first plan the panel is blank with a caption. The recording is read in file order with the
streaming reader, which is what ties each imagined frame to its plan (the recorder writes a plan's frames right
after it) and lets a recording cut short by a killed process be viewed up to its last whole chunk.
`verify_recording` checks a recording against the SHA-256 the outcome log keeps, before anything is read.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "EpisodeStreams",
    "PlanFrames",
    "ViewError",
    "compose_frames",
    "imagined_at",
    "read_episode",
    "verify_recording",
    "write_video",
]

_IMAGINED = "/eva/imagined/"
_BLANK = 48  # grey of the imagined panel before the first plan: visibly not a camera image


class ViewError(ValueError):
    """The recording cannot be viewed: missing, tampered with, unfinished, or without the camera asked for."""


@dataclass
class PlanFrames:
    """One plan as the recording has it: its stamp, its id and score, and its imagined frames (stamp, RGB)."""

    stamp_ns: int
    request_id: int | None
    score: float | None
    frames: list[tuple[int, np.ndarray]] = field(default_factory=list)


@dataclass(frozen=True)
class EpisodeStreams:
    """The arrays of one recording a view needs; stamps are nanoseconds on the recording's clock."""

    camera: str
    frame_stamps: np.ndarray  # (N,) int64, the real camera's frames
    frames: np.ndarray  # (N, h, w, 3) uint8 RGB
    plans: list[PlanFrames]  # in stamp order
    joint_names: tuple[str, ...]  # the traced joints
    command_stamps: np.ndarray  # (C,)
    command: np.ndarray  # (C, len(joint_names)), the filtered command: what the robot was sent
    measured_stamps: np.ndarray  # (M,)
    measured: np.ndarray  # (M, len(joint_names))

    @property
    def fps(self) -> float:
        """The camera's rate in the recording (the median frame interval; 12.5 when there is one frame)."""
        if len(self.frame_stamps) < 2:
            return 12.5
        return float(1e9 / np.median(np.diff(self.frame_stamps)))


def verify_recording(entry: Mapping[str, object] | None, episode_id: int) -> Path:
    """The recording file an outcome-log entry names, once its SHA-256 matches the entry's; ViewError otherwise."""
    if entry is None:
        raise ViewError(f"episode {episode_id} has no recording in the log (was it run with --record?)")
    path = Path(str(entry.get("path") or ""))
    expected = entry.get("sha256")
    if not expected:
        raise ViewError(f"the recording of episode {episode_id} was not finished ({entry.get('error')}): no hash")
    if not path.is_file():
        raise ViewError(f"the recording of episode {episode_id} is missing: {path}")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ViewError(f"{path} does not match the SHA-256 the log keeps for episode {episode_id}: changed since")
    return path


def _messages(path: Path, wanted) -> Iterator[tuple[str, int, object]]:
    """(topic, log time, decoded message) in file order, for the topics `wanted(topic, schema name)` accepts."""
    from mcap.exceptions import EndOfFile, McapError
    from mcap.reader import NonSeekingReader
    from mcap_ros2.decoder import DecoderFactory

    factory = DecoderFactory()
    decoders: dict[int, object] = {}
    with open(path, "rb") as handle:
        reader = NonSeekingReader(handle)
        try:
            for schema, channel, message in reader.iter_messages(log_time_order=False):
                if schema is None or not wanted(channel.topic, schema.name):
                    continue
                decode = decoders.get(channel.id)
                if decode is None:
                    decode = decoders[channel.id] = factory.decoder_for(channel.message_encoding, schema)
                yield channel.topic, message.log_time, decode(message.data)
        except EndOfFile:  # cut short (a killed run): everything before the cut has been read
            return
        except McapError as error:
            raise ViewError(f"{path} is not a readable MCAP recording: {error}") from None


def _decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ViewError("a camera frame in the recording is not a readable JPEG")
    return image[..., ::-1]


def read_episode(path: Path, camera: str = "cam_high", arm_topic: str = "/puppet/joint_left") -> EpisodeStreams:
    """The real frames of `camera`, every plan with its imagined frames of `camera`, and the filtered command and
    the measured position of the joints `arm_topic` (a follower JointState topic) carries."""
    imagined_topic = f"{_IMAGINED}{camera}/compressed"
    frames: list[tuple[int, np.ndarray]] = []
    plans: list[PlanFrames] = []
    commands: list[tuple[int, list[str], list[float]]] = []
    measured: list[tuple[int, list[str], list[float]]] = []

    def wanted(topic: str, schema: str) -> bool:
        traces = ("/eva/command/filtered", arm_topic, "/eva/plan_info")
        return topic in traces or (schema == "sensor_msgs/msg/CompressedImage")

    for topic, stamp, message in _messages(Path(path), wanted):
        if topic == "/eva/plan_info":
            info = json.loads(message.data)
            plans.append(PlanFrames(stamp, info.get("request_id"), info.get("score")))
        elif topic == imagined_topic and plans:
            plans[-1].frames.append((stamp, _decode_jpeg(message.data)))
        elif topic.startswith(_IMAGINED):
            continue  # another camera's imagination
        elif topic.endswith("/compressed"):
            if message.header.frame_id == camera:
                frames.append((stamp, _decode_jpeg(message.data)))
        else:
            rows = commands if topic == "/eva/command/filtered" else measured
            rows.append((stamp, list(message.name), list(message.position)))
    if not frames:
        raise ViewError(f"{path} holds no frames of camera {camera!r}")
    return _streams(camera, frames, plans, commands, measured)


def _streams(camera, frames, plans, commands, measured) -> EpisodeStreams:
    """The collected messages as arrays; the traced joints are the measured arm's, found by name in the command."""
    command_names = commands[0][1] if commands else []
    measured_names = measured[0][1] if measured else []
    names = tuple(n for n in measured_names if n in command_names)  # traced only where both sides have it
    command_columns = [command_names.index(n) for n in names]
    measured_columns = [measured_names.index(n) for n in names]
    return EpisodeStreams(
        camera=camera,
        frame_stamps=np.array([s for s, _ in frames], np.int64),
        frames=np.stack([f for _, f in frames]),
        plans=sorted(plans, key=lambda plan: plan.stamp_ns),
        joint_names=names,
        command_stamps=np.array([s for s, _, _ in commands], np.int64),
        command=_table(commands, command_columns),
        measured_stamps=np.array([s for s, _, _ in measured], np.int64),
        measured=_table(measured, measured_columns),
    )


def _table(rows: list[tuple[int, list[str], list[float]]], columns: list[int]) -> np.ndarray:
    """(len(rows), len(columns)) of the picked positions; an empty table keeps its shape."""
    return np.array([[values[c] for c in columns] for _, _, values in rows], float).reshape(len(rows), len(columns))


def imagined_at(streams: EpisodeStreams, stamp_ns: int) -> tuple[np.ndarray | None, PlanFrames | None]:
    """The imagined frame shown at `stamp_ns` and the plan it belongs to; (None, None) before the first plan."""
    starts = [plan.stamp_ns for plan in streams.plans]
    index = bisect.bisect_right(starts, stamp_ns) - 1
    if index < 0:
        return None, None
    plan = streams.plans[index]
    shown = [image for at, image in plan.frames if at <= stamp_ns]
    return (shown[-1] if shown else None), plan


@dataclass(frozen=True)
class _Traces:
    """The joint-trace panel, drawn once, and where its time axis lies in pixels (for the cursor)."""

    image: np.ndarray
    t0_ns: int
    x_of_s: tuple[float, float]  # pixel x = a + b * seconds
    y_span: tuple[int, int]


def _trace_panel(streams: EpisodeStreams, width: int) -> _Traces:
    """One row per traced joint: the command sent (solid) and the position measured (dashed), time in seconds."""
    # The Agg canvas directly, not pyplot: no display needed, and no global backend switched under the caller.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t0 = int(streams.frame_stamps[0])
    rows = max(1, len(streams.joint_names))
    figure = Figure(figsize=(width / 100, (34 * rows + 44) / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    figure.subplots_adjust(left=0.22, right=0.98, top=1 - 8 / (34 * rows + 44), bottom=36 / (34 * rows + 44))
    command_s = (streams.command_stamps - t0) / 1e9
    measured_s = (streams.measured_stamps - t0) / 1e9
    for row, (axis, name) in enumerate(zip(axes, streams.joint_names or ("no joints",), strict=False)):
        if streams.joint_names:
            axis.plot(command_s, streams.command[:, row], color="tab:blue", linewidth=1.0)
            axis.plot(measured_s, streams.measured[:, row], color="tab:orange", linewidth=1.0, linestyle="--")
        axis.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=6)
        axis.tick_params(labelsize=6)
    axes[0].set_xlim(0.0, max(1e-3, (streams.frame_stamps[-1] - t0) / 1e9))
    axes[-1].set_xlabel("s  (blue: commanded, filtered; orange dashed: measured)", fontsize=7)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    height = image.shape[0]
    (x0, _), (x1, _) = axes[0].transData.transform([(0.0, 0.0), (1.0, 0.0)])
    top, bottom = axes[0].get_window_extent(), axes[-1].get_window_extent()
    return _Traces(image, t0, (float(x0), float(x1 - x0)), (int(height - top.y1), int(height - bottom.y0)))


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    """White text on a black band, top left: legible over any camera image."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    (width, height), baseline = cv2.getTextSize(text, font, scale, 1)
    cv2.rectangle(image, (0, 0), (width + 8, height + baseline + 6), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (4, height + 3), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def _panel(image: np.ndarray | None, size: tuple[int, int], scale: int) -> np.ndarray:
    height, width = size
    if image is None:
        return np.full((height * scale, width * scale, 3), _BLANK, np.uint8)
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.repeat(np.repeat(image, scale, axis=0), scale, axis=1))


def compose_frames(streams: EpisodeStreams, scale: int = 4) -> Iterator[np.ndarray]:
    """One RGB frame per real camera frame: real | imagined (upscaled x`scale`, nearest), traces with a cursor."""
    size = streams.frames.shape[1:3]
    traces = _trace_panel(streams, 2 * size[1] * scale)
    count = len(streams.frames)
    for index, (stamp, real) in enumerate(zip(streams.frame_stamps, streams.frames, strict=True)):
        seconds = (int(stamp) - traces.t0_ns) / 1e9
        left = _caption(_panel(real, size, scale), f"real {streams.camera}  t={seconds:.2f} s  {index + 1}/{count}")
        imagined, plan = imagined_at(streams, int(stamp))
        if plan is None:
            label = "imagined: no plan yet"
        elif imagined is None:
            label = f"imagined: plan {plan.request_id} has no {streams.camera} frame"
        else:
            score = "" if plan.score is None else f"  score {plan.score:.2f}"
            label = f"imagined: plan {plan.request_id}{score}"
        right = _caption(_panel(imagined, size, scale), label)
        plot = traces.image.copy()
        x = round(traces.x_of_s[0] + traces.x_of_s[1] * seconds)
        cv2.line(plot, (x, traces.y_span[0]), (x, traces.y_span[1]), (200, 0, 0), 1)
        yield np.vstack([np.hstack([left, right]), plot])


def write_video(frames: Iterable[np.ndarray], path: Path, fps: float) -> int:
    """Write `frames` (RGB) as a GIF, or as MP4 (mp4v) when `path` ends in .mp4; returns the frame count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mp4":
        return _write_mp4(frames, path, fps)
    from PIL import Image

    count = 0

    def paletted() -> Iterator[Image.Image]:
        nonlocal count
        for frame in frames:
            count += 1
            # Paletted as they come, so the writer holds one byte per pixel per frame, not three.
            yield Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)

    images = paletted()
    first = next(images, None)
    if first is None:
        raise ViewError("no frames to write")
    first.save(path, save_all=True, append_images=images, duration=round(1000 / fps), loop=0)
    return count


def _write_mp4(frames: Iterable[np.ndarray], path: Path, fps: float) -> int:
    writer = None
    count = 0
    try:
        for frame in frames:
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(str(path), fourcc, fps, (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise ViewError(f"OpenCV cannot write MP4 (mp4v) to {path}")
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    return count
