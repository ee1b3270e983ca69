"""Conversions between ROS messages and the runtime's arrays, with the validation that makes a message usable.

- ``JointState`` <-> one arm's vector (7 values on CobotMagic: 6 joints + gripper, in the embodiment's units).
  A message is refused (:class:`MalformedMessageError`, counted by the caller) when its position count is wrong,
  a value is not finite, or its names are present but are not exactly the expected joint names (named
  messages are reordered by name, so a driver listing joints in another order still works). Velocity and
  effort are optional on the wire: a partial or non-finite one reads as None (unmeasured).
- ``Image`` (rgb8 / bgr8, any row padding) <-> RGB ``uint8`` arrays (height, width, 3).
- a :class:`~eva_runtime.control.executor.Plan` -> ``JointTrajectory``; frames -> one tiled ``Image``.
Stamps are seconds (float) on the node clock inside the runtime and ``builtin_interfaces/Time`` on the wire.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from eva_runtime.control.executor import Plan

__all__ = [
    "MalformedMessageError",
    "image_to_rgb",
    "joint_state_to_arrays",
    "joint_state_to_vector",
    "plan_to_trajectory",
    "rgb_to_image",
    "seconds_to_stamp",
    "stamp_to_seconds",
    "tile_frames",
    "vector_to_joint_state",
]


class MalformedMessageError(ValueError):
    """A message the runtime refuses to use; the text says why (shown in diagnostics)."""


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    nanoseconds = round(seconds * 1e9)
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def _seconds_to_duration(seconds: float) -> Duration:
    nanoseconds = round(seconds * 1e9)
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def joint_state_to_arrays(
    message: JointState, joint_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(positions, velocities or None, efforts or None) of one arm in `joint_names` order; MalformedMessageError
    if the positions are unusable."""
    count = len(joint_names)
    position = np.asarray(message.position, dtype=np.float64)
    if position.shape != (count,):
        raise MalformedMessageError(f"{position.size} positions, expected {count}")
    order = np.arange(count)
    if len(message.name):
        names = list(message.name)
        if len(names) != count or sorted(names) != sorted(joint_names):
            raise MalformedMessageError(f"joint names {names}, expected {list(joint_names)}")
        order = np.array([names.index(name) for name in joint_names])
    position = position[order]
    if not np.all(np.isfinite(position)):
        raise MalformedMessageError(f"non-finite position {position.tolist()}")
    return position, _optional(message.velocity, order), _optional(message.effort, order)


def _optional(values: Sequence[float], order: np.ndarray) -> np.ndarray | None:
    # Velocity and effort are optional on the wire; a partial or non-finite one is dropped, not trusted.
    array = np.asarray(values, dtype=np.float64)
    usable = array.shape == order.shape and np.all(np.isfinite(array))
    return array[order] if usable else None


def joint_state_to_vector(message: JointState, joint_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """(positions, velocities or None) of one arm in `joint_names` order; MalformedMessageError if unusable."""
    position, velocity, _ = joint_state_to_arrays(message, joint_names)
    return position, velocity


def vector_to_joint_state(
    position: np.ndarray,
    joint_names: Sequence[str],
    stamp: float,
    velocity: np.ndarray | None = None,
    effort: np.ndarray | None = None,
) -> JointState:
    message = JointState()
    message.header.stamp = seconds_to_stamp(stamp)
    message.name = list(joint_names)
    message.position = [float(x) for x in position]
    if velocity is not None:
        message.velocity = [float(x) for x in velocity]
    if effort is not None:
        message.effort = [float(x) for x in effort]
    return message


def image_to_rgb(message: Image) -> np.ndarray:
    """RGB uint8 (height, width, 3) from an rgb8 or bgr8 image; MalformedMessageError for anything else."""
    if message.encoding not in ("rgb8", "bgr8"):
        raise MalformedMessageError(f"encoding {message.encoding!r}, expected rgb8 or bgr8")
    height, width, step = int(message.height), int(message.width), int(message.step)
    if height <= 0 or width <= 0 or step < 3 * width or len(message.data) < height * step:
        raise MalformedMessageError(f"{width}x{height} image with step {step} and {len(message.data)} bytes")
    rows = np.frombuffer(bytes(message.data), dtype=np.uint8, count=height * step).reshape(height, step)
    image = rows[:, : 3 * width].reshape(height, width, 3)
    return np.ascontiguousarray(image[..., ::-1] if message.encoding == "bgr8" else image)


def rgb_to_image(image: np.ndarray, stamp: float, frame_id: str = "") -> Image:
    array = np.ascontiguousarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {array.shape}")
    message = Image()
    message.header.stamp = seconds_to_stamp(stamp)
    message.header.frame_id = frame_id
    message.height, message.width = int(array.shape[0]), int(array.shape[1])
    message.encoding = "rgb8"
    message.is_bigendian = 0
    message.step = 3 * message.width
    message.data = array.tobytes()
    return message


def tile_frames(rows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """One image from rows of equally sized RGB frames (e.g. one row per camera, one column per time step)."""
    if not rows or not all(rows):
        raise ValueError("tile_frames needs at least one frame in every row")
    height, width = np.asarray(rows[0][0]).shape[:2]
    columns = max(len(row) for row in rows)
    canvas = np.zeros((height * len(rows), width * columns, 3), dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            frame = np.asarray(frame, dtype=np.uint8)
            if frame.shape != (height, width, 3):
                raise ValueError(f"frame of shape {frame.shape} in a tile of {(height, width, 3)} frames")
            canvas[r * height : (r + 1) * height, c * width : (c + 1) * width] = frame
    return canvas


def plan_to_trajectory(plan: Plan, joint_names: Sequence[str]) -> JointTrajectory:
    """The decoded plan as a trajectory: header stamp = the plan's observation time, action k at k / fps."""
    message = JointTrajectory()
    message.header.stamp = seconds_to_stamp(plan.start_time)
    message.joint_names = list(joint_names)
    for index, action in enumerate(plan.actions):
        point = JointTrajectoryPoint()
        point.positions = [float(x) for x in action]
        point.time_from_start = _seconds_to_duration(index / plan.fps)
        message.points.append(point)
    return message
