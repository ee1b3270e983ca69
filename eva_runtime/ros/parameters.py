"""The parameters of the ROS nodes as tables: name, default, whether required, and what each one means.

The nodes (policy, simulated robot, recorder) declare exactly these tables, docs/ros.md lists them, and the
launch-file check compares what the launch file and config/bimanual.yaml pass against them. Conventions:
- a required parameter (``REQUIRED``) is declared without a value: the node refuses to configure or start
  until it is given one;
- an array parameter with no useful default (``EMPTY_DOUBLES``) is declared with its type only, because rclpy
  cannot type an empty list; reading it unset gives an empty list;
- an empty topic string means "the convention's (or the embodiment's) topic" (see conventions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from eva_runtime.ros.conventions import ARMS

__all__ = [
    "CAMERA_NAMES",
    "EMPTY_DOUBLES",
    "POLICY_PARAMETERS",
    "RECORD_PARAMETERS",
    "REQUIRED",
    "SIM_ROBOT_PARAMETERS",
    "ParameterSpec",
    "declare",
    "read",
]

REQUIRED = object()
EMPTY_DOUBLES = object()
# The vendor camera names; a camera topic parameter exists for each (empty: the embodiment file's topic).
CAMERA_NAMES = ("cam_high", "cam_left_wrist", "cam_right_wrist")
PRIVILEGED_STATE_TOPIC = "/eva_sim/privileged_state"


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any  # a value, REQUIRED (string, no default) or EMPTY_DOUBLES (double array, unset = [])
    description: str

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _joint_topics(roles: tuple[str, ...]) -> list[ParameterSpec]:
    return [
        ParameterSpec(
            f"topics.{role}.{arm}", "", f"{role.replace('_', ' ')} topic of the {arm} arm (empty: convention)"
        )
        for role in roles
        for arm in ARMS
    ]


def _camera_topics() -> list[ParameterSpec]:
    return [
        ParameterSpec(f"topics.camera.{name}", "", f"{name} image topic (empty: embodiment)") for name in CAMERA_NAMES
    ]


_CONVENTION = ParameterSpec(
    "topic_convention", "classic", "classic (/puppet feedback, commands on /master) or joint_states (/joint_states_*)"
)
# Read by the executable (node_main.py), not the node: a node's process ends when its launcher dies.
_EXIT_WITH_PARENT = ParameterSpec(
    "exit_with_parent", True, "exit (as on SIGTERM) when the process that started the node (ros2 launch) dies"
)

POLICY_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("bundle", REQUIRED, "deployment bundle directory (verified on configure)"),
    ParameterSpec("embodiment_file", "", "robot embodiment YAML (empty: the bundle's); must match the bundle"),
    _CONVENTION,
    *_joint_topics(("follower_state", "leader_state", "command")),
    *_camera_topics(),
    ParameterSpec("topics.instruction", "", "instruction topic, std_msgs/String (empty: the embodiment's)"),
    ParameterSpec("topics.privileged_state", PRIVILEGED_STATE_TOPIC, "sim-only oracle state (test instrument)"),
    ParameterSpec("log_path", "~/.ros/eva_runtime/outcomes.db", "SQLite episode outcome log"),
    ParameterSpec("record_dir", "", "directory for one MCAP recording per episode (empty: none)"),
    ParameterSpec(
        "held_command_path", "", "last command sent, read by a restarted node to keep a grip (empty: beside log_path)"
    ),
    ParameterSpec("held_command_max_age_s", 600.0, "a held command older than this is not used (0: never used)"),
    ParameterSpec("home_pose", EMPTY_DOUBLES, "pose to slide to on activate (unset: hold where the arms are)"),
    ParameterSpec("homing_speed_fraction", 0.3, "homing speed as a fraction of each joint's velocity cap"),
    ParameterSpec("mode_after_homing", "hold", "mode once homed: hold (the operator starts) or autonomous"),
    ParameterSpec("activation_timeout_s", 5.0, "how long activate waits for fresh joint states"),
    ParameterSpec("planner_start_timeout_s", 120.0, "how long configure waits for the planner process"),
    ParameterSpec("planner_timeout_s", 3.0, "no plan for this long while autonomous -> HOLD"),
    ParameterSpec("robot_timeout_s", 0.0, "joint states silent this long -> FAULT (0: the embodiment's, else none)"),
    ParameterSpec("initial_latency_s", 0.8, "first guess of observation-to-plan latency"),
    ParameterSpec("execute_fraction", 1.0, "share of each plan executed before the next replaces it"),
    ParameterSpec("interpolation", "bspline", "curve through plan actions: bspline (C2, no overshoot) or linear"),
    ParameterSpec("blend_s", 0.5, "junction between plans, seconds"),
    ParameterSpec("gripper_latch", EMPTY_DOUBLES, "[close_below, open_above]: open-or-closed grippers (empty: off)"),
    ParameterSpec("track_headroom", 0.9, "follow plans within this share of the caps before the filter (0: off)"),
    ParameterSpec("synchronous", False, "plan only when the current plan ran out (robot waits)"),
    ParameterSpec("plan_attempts", 2, "rollouts sampled per request before a rejection"),
    ParameterSpec("plan_threshold", 0.0, "minimum executability reward to execute a plan"),
    ParameterSpec("allow_shared_command_topic", False, "activate even if another node publishes on a command topic"),
    ParameterSpec("diagnostics_rate_hz", 1.0, "/diagnostics publishing rate"),
    ParameterSpec("status_rate_hz", 5.0, "~/status publishing rate"),
    ParameterSpec("log_update_period_s", 5.0, "how often the running episode's counters are written"),
    ParameterSpec("episode.task", "transfer_cube", "task of the next episode (also the oracle's task)"),
    ParameterSpec("episode.instruction", "", "instruction of the next episode (empty: the last on the topic)"),
    ParameterSpec("episode.split", "seen", "seen or unseen, recorded with the next episode"),
    ParameterSpec("episode.note", "", "note stored with the next end_episode label (then cleared)"),
    ParameterSpec("episode.seed", 0, "seed of the next episode's plan requests"),
    _EXIT_WITH_PARENT,
)

SIM_ROBOT_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("embodiment_file", REQUIRED, "embodiment YAML of the simulated robot (joint layout, cameras, rate)"),
    ParameterSpec("task", "transfer_cube", "simulated task (scene and objects)"),
    ParameterSpec("seed", 0, "object placement seed (read again by ~/reset)"),
    _CONVENTION,
    *_joint_topics(("follower_state", "command")),
    *_camera_topics(),
    ParameterSpec("topics.privileged_state", PRIVILEGED_STATE_TOPIC, "sim-only oracle state (test instrument)"),
    ParameterSpec("publish_privileged_state", True, "publish the simulator state for the oracle world model"),
    ParameterSpec("camera_rate_hz", 0.0, "camera publishing rate (0: the embodiment's camera fps)"),
    ParameterSpec("camera_width", 0, "rendered width (0: the embodiment's)"),
    ParameterSpec("camera_height", 0, "rendered height (0: the embodiment's)"),
    ParameterSpec("cameras_enabled", True, "publish camera images (false: a camera driver that stopped)"),
    ParameterSpec("joint_states_enabled", True, "publish follower joint states (false: an arm driver that stopped)"),
    ParameterSpec("start_pose", EMPTY_DOUBLES, "arm pose after a reset (unset: the scene's start pose)"),
    _EXIT_WITH_PARENT,
)

# Per-episode values (out_dir, task, instruction, sim, compression, max_frames) are read at each ~/start, so an
# operator changes them between episodes with `ros2 param set`; the others are read once at startup.
RECORD_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("embodiment_file", REQUIRED, "robot embodiment YAML (joint layout, cameras and their size)"),
    _CONVENTION,
    *_joint_topics(("follower_state", "leader_state")),
    *_camera_topics(),
    ParameterSpec("out_dir", REQUIRED, "directory the episode_{i}.hdf5 files are written to (checked on start)"),
    ParameterSpec("fps", 0.0, "sampling rate while recording (0: the embodiment's camera rate, as AgileX records)"),
    ParameterSpec("camera_width", 0, "image width a frame must have (0: the embodiment's); others are refused"),
    ParameterSpec("camera_height", 0, "image height a frame must have (0: the embodiment's); others are refused"),
    ParameterSpec("max_input_age_s", 0.5, "skip a sample (counted) when any input's newest message is older than this"),
    ParameterSpec("task", "", "task name written to the next episode's attributes"),
    ParameterSpec("instruction", "", "language instruction written to the next episode's attributes"),
    ParameterSpec("sim", False, "attrs['sim'] of the next episode: false on a robot (ACT shifts real actions)"),
    ParameterSpec("compression", "", "HDF5 filter of the next episode: empty (none, as AgileX writes), gzip or lzf"),
    ParameterSpec("max_frames", 0, "stop sampling after this many frames (0: no limit; frames are held in memory)"),
    ParameterSpec("diagnostics_rate_hz", 1.0, "/diagnostics publishing rate"),
    _EXIT_WITH_PARENT,
)


def declare(node: Node, table: tuple[ParameterSpec, ...]) -> None:
    for spec in table:
        descriptor = ParameterDescriptor(description=spec.description)
        if spec.default is REQUIRED:
            node.declare_parameter(spec.name, Parameter.Type.STRING, descriptor)
        elif spec.default is EMPTY_DOUBLES:
            node.declare_parameter(spec.name, Parameter.Type.DOUBLE_ARRAY, descriptor)
        else:
            node.declare_parameter(spec.name, spec.default, descriptor)


def read(node: Node, name: str) -> Any:
    """A parameter's value; an unset optional array reads as [], an unset required one raises ValueError."""
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        tables = (*POLICY_PARAMETERS, *SIM_ROBOT_PARAMETERS, *RECORD_PARAMETERS)
        if name in {s.name for s in tables if s.default is EMPTY_DOUBLES}:
            return []
        raise ValueError(f"parameter {name!r} is required: pass it (e.g. --ros-args -p {name}:=...)") from None
