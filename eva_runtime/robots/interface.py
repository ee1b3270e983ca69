"""RobotInterface: the small boundary every robot backend implements (simulation, ROS topics, Piper over CAN).

An observation is timestamped camera frames plus joint positions (and velocities and efforts when the robot
reports them).
`send` takes a :class:`~eva_runtime.safety.FilterResult`, not an array: the only way to produce one is the
safety filter, so no backend can be handed a command that skipped it. It returns the command actually applied.
Constructors only store configuration; `connect` does the work. No MuJoCo, ROS or CAN types cross this boundary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from eva_runtime.embodiment import Embodiment
from eva_runtime.safety import FilterResult

__all__ = ["CameraFrame", "Observation", "RobotError", "RobotInterface", "check_command"]


class RobotError(RuntimeError):
    """The robot cannot do what was asked (not connected, fault status, lost connection)."""


@dataclass(frozen=True)
class CameraFrame:
    image: np.ndarray  # (height, width, 3) uint8, RGB
    stamp: float  # seconds on the robot clock, when the frame was captured


@dataclass(frozen=True)
class Observation:
    stamp: float  # when the joint state was read
    joint_position: np.ndarray  # (dof,) embodiment order and units
    joint_velocity: np.ndarray | None = None
    frames: Mapping[str, CameraFrame] = field(default_factory=dict)
    fault: str | None = None  # the robot's own fault status, None when healthy
    joint_effort: np.ndarray | None = None  # (dof,) joint torque / gripper force, where the backend measures it


def check_command(embodiment: Embodiment, result: FilterResult) -> np.ndarray:
    """The command of a filter result, verified once more at the boundary (shape and finiteness)."""
    if not isinstance(result, FilterResult):
        raise TypeError(f"robots accept safety-filter results only, got {type(result).__name__}")
    command = result.command
    if command.shape != (embodiment.dof,) or not np.all(np.isfinite(command)):
        raise RobotError(f"refusing a malformed command {command!r}")
    return command


class RobotInterface(ABC):
    embodiment: Embodiment

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def observe(self, cameras: bool | Sequence[str] = True) -> Observation:
        """Latest state with frames of every camera (True), none (False), or only the named ones: a loop asks only
        for the images it will use this tick."""

    @abstractmethod
    def send(self, result: FilterResult) -> np.ndarray:
        """Apply a safety-filtered command; return the command actually applied."""

    @abstractmethod
    def now(self) -> float:
        """The robot clock in seconds (simulation time in simulation, monotonic time on hardware)."""

    @abstractmethod
    def disconnect(self) -> None: ...

    # Episode hooks with defaults for a real robot, where a person resets the scene and labels the outcome.
    @property
    def instruction(self) -> str:
        """The task's default instruction where the robot knows one (simulation); empty otherwise."""
        return ""

    def reset_episode(self, seed: int) -> None:
        """Put the scene back for a new episode where the robot can (simulation); nothing to do on hardware."""
        return None  # a person resets a real scene

    def success(self) -> bool | None:
        """The robot's own success check where one exists (simulation); None means unknown: an operator labels."""
        return None

    @property
    def stages(self) -> tuple[str, ...]:
        """The task's stages in order, where the robot can tell them apart (simulation); empty otherwise."""
        return ()

    def furthest_stage(self) -> int | None:
        """How many of `stages` the episode reached (0: none), or None where the robot cannot tell."""
        return None

    def closest_reach_m(self) -> float | None:
        """The episode's smallest distance from the gripper to the object it must take, where the robot can
        measure it (simulation: `TaskSpec.reach_distance`); None otherwise."""
        return None

    def __enter__(self) -> RobotInterface:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
