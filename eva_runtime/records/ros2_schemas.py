"""The ROS 2 message definitions the episode recordings use, in the `ros2msg` text MCAP readers expect.

An MCAP channel with `ros2msg` schema encoding carries the message's full definition: the type's own fields, then
each type it depends on after a line of 80 `=` and a `MSG: package/Type` line (the layout `ros2 bag record`
writes and Foxglove, the `mcap` tools and rosbags parse). The definitions below are the standard interfaces of
ROS 2 Humble (sensor_msgs, trajectory_msgs, std_msgs, diagnostic_msgs, builtin_interfaces); they are written out
here so recording needs no ROS install, and a test checks them against an independent type store (rosbags).

Message values are plain dicts in the shape `mcap_ros2`'s CDR encoder takes (nested messages as dicts, arrays as
lists, `uint8[]` as bytes); the builders below make them from numpy and robot-clock stamps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFINITIONS",
    "compressed_image",
    "diagnostic_array",
    "header",
    "joint_state",
    "joint_trajectory",
    "text",
]

_SEPARATOR = "=" * 80
_TIME = "int32 sec\nuint32 nanosec"
_HEADER = "builtin_interfaces/Time stamp\nstring frame_id"


def _definition(fields: str, *dependencies: tuple[str, str]) -> str:
    parts = [fields]
    for name, body in dependencies:
        parts.append(f"{_SEPARATOR}\nMSG: {name}\n{body}")
    return "\n".join(parts) + "\n"


_HEADER_DEPENDENCIES = (("std_msgs/Header", _HEADER), ("builtin_interfaces/Time", _TIME))

DEFINITIONS: dict[str, str] = {
    "sensor_msgs/msg/CompressedImage": _definition(
        "std_msgs/Header header\nstring format\nuint8[] data", *_HEADER_DEPENDENCIES
    ),
    "sensor_msgs/msg/JointState": _definition(
        "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort",
        *_HEADER_DEPENDENCIES,
    ),
    "trajectory_msgs/msg/JointTrajectory": _definition(
        "std_msgs/Header header\nstring[] joint_names\ntrajectory_msgs/JointTrajectoryPoint[] points",
        *_HEADER_DEPENDENCIES,
        (
            "trajectory_msgs/JointTrajectoryPoint",
            "float64[] positions\nfloat64[] velocities\nfloat64[] accelerations\nfloat64[] effort\n"
            "builtin_interfaces/Duration time_from_start",
        ),
        ("builtin_interfaces/Duration", _TIME),
    ),
    "std_msgs/msg/String": _definition("string data"),
    "diagnostic_msgs/msg/DiagnosticArray": _definition(
        "std_msgs/Header header\ndiagnostic_msgs/DiagnosticStatus[] status",
        *_HEADER_DEPENDENCIES,
        (
            "diagnostic_msgs/DiagnosticStatus",
            "byte OK=0\nbyte WARN=1\nbyte ERROR=2\nbyte STALE=3\nbyte level\nstring name\nstring message\n"
            "string hardware_id\ndiagnostic_msgs/KeyValue[] values",
        ),
        ("diagnostic_msgs/KeyValue", "string key\nstring value"),
    ),
}


def _time(nanoseconds: int) -> dict:
    return {"sec": int(nanoseconds // 1_000_000_000), "nanosec": int(nanoseconds % 1_000_000_000)}


def header(nanoseconds: int, frame_id: str = "") -> dict:
    return {"stamp": _time(nanoseconds), "frame_id": frame_id}


def joint_state(
    nanoseconds: int,
    names: Sequence[str],
    position: np.ndarray,
    velocity: np.ndarray | None = None,
    effort: np.ndarray | None = None,
) -> dict:
    """Unmeasured velocity or effort is an empty array (the ROS convention), never zeros."""
    return {
        "header": header(nanoseconds),
        "name": list(names),
        "position": [float(x) for x in position],
        "velocity": [] if velocity is None else [float(x) for x in velocity],
        "effort": [] if effort is None else [float(x) for x in effort],
    }


def joint_trajectory(nanoseconds: int, names: Sequence[str], actions: np.ndarray, fps: float) -> dict:
    """A plan as a trajectory: point k at k / fps after the observation it was planned from (the header)."""
    points = []
    for index, action in enumerate(actions):
        offset = round(index / fps * 1e9)
        points.append(
            {
                "positions": [float(x) for x in action],
                "velocities": [],
                "accelerations": [],
                "effort": [],
                "time_from_start": _time(offset),
            }
        )
    return {"header": header(nanoseconds), "joint_names": list(names), "points": points}


def compressed_image(nanoseconds: int, frame_id: str, encoded: bytes, image_format: str = "jpeg") -> dict:
    return {"header": header(nanoseconds, frame_id), "format": image_format, "data": encoded}


def text(value: str) -> dict:
    return {"data": value}


def diagnostic_array(nanoseconds: int, statuses: Sequence[tuple[int, str, str, dict[str, str]]]) -> dict:
    """statuses: (level 0-3, name, message, key -> value)."""
    return {
        "header": header(nanoseconds),
        "status": [
            {
                "level": int(level),
                "name": name,
                "message": message,
                "hardware_id": "eva_runtime",
                "values": [{"key": str(k), "value": str(v)} for k, v in values.items()],
            }
            for level, name, message, values in statuses
        ],
    }
