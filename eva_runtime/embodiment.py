"""Embodiment description: joints, limits, cameras, topics and control timing, loaded from calibration YAML.

One YAML file per robot (``calibration/<name>.yaml``) is the single source of the joint layout, the hard limits
the safety filter enforces, the camera set and the ROS topic convention. It is validated once, at load time:
any problem raises :class:`EmbodimentError` naming the file, the key path and what is wrong, before anything
moves. The loaded objects are frozen.

Layout rule (checked): every arm lists its revolute joints first and exactly one gripper last, so the
bimanual vector is ``[left j1..jN, left gripper, right j1..jN, right gripper]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eva_runtime.config_files import ConfigFileError, load_model

__all__ = [
    "ArmSpec",
    "CameraSpec",
    "Embodiment",
    "EmbodimentError",
    "JointKind",
    "JointSpec",
    "SafetySpec",
    "TopicSpec",
    "load_embodiment",
]

# strict numbers: a quoted "3.0" or a bool where a number belongs is a typo in a limits file, not a value.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(strict=True, gt=0)]


class EmbodimentError(ConfigFileError):
    """An embodiment file is missing, unreadable or invalid; the message names the file and the key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JointKind(StrEnum):
    REVOLUTE = "revolute"
    GRIPPER = "gripper"


class JointSpec(_Frozen):
    """One joint: position range and the caps on its commanded motion."""

    name: str = Field(min_length=1)
    kind: JointKind
    position: tuple[FiniteFloat, FiniteFloat]
    velocity_max: PositiveFloat
    acceleration_max: PositiveFloat
    # Used by the executability reward and calibration; the safety filter does not clamp jerk (see safety/).
    jerk_max: PositiveFloat | None = None

    @field_validator("position")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not low < high:
            raise ValueError(f"position range min {low} must be below max {high}")
        return value


class ArmSpec(_Frozen):
    name: str = Field(min_length=1)
    joints: tuple[JointSpec, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _gripper_last(self) -> ArmSpec:
        kinds = [joint.kind.value for joint in self.joints]
        if kinds[-1] != JointKind.GRIPPER or kinds.count(JointKind.GRIPPER) != 1:
            raise ValueError(
                f"arm {self.name!r}: list the revolute joints first and exactly one gripper last (got {kinds})"
            )
        return self


class CameraSpec(_Frozen):
    name: str = Field(min_length=1)
    topic: str = Field(pattern=r"^/")
    width: PositiveInt
    height: PositiveInt
    fps: PositiveFloat
    encoding: Literal["rgb8", "bgr8"] = "rgb8"


def _read_only(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # frozen=True stops attribute assignment only; a plain dict inside could still be edited after validation.
    return MappingProxyType(dict(value))


class TopicSpec(_Frozen):
    """ROS topic names per arm; defaults follow the vendor convention (every one overridable in the node)."""

    follower_state: Mapping[str, str]
    leader_state: Mapping[str, str]
    command: Mapping[str, str]
    instruction: str = "/instruction"
    joint_names: tuple[str, ...] = Field(min_length=1)

    _freeze = field_validator("follower_state", "leader_state", "command")(_read_only)


class SafetySpec(_Frozen):
    """Margins, bounds and input timeouts for the safety filter."""

    position_margin_revolute: NonNegativeFloat
    position_margin_gripper: NonNegativeFloat
    tracking_error_max: PositiveFloat
    tracking_error_max_gripper: PositiveFloat
    # A control tick later than this after the previous one is treated as this long: a stalled loop must not
    # turn into a license for a large step.
    max_tick_interval_s: PositiveFloat
    timeouts_s: Mapping[str, PositiveFloat]

    _freeze = field_validator("timeouts_s")(_read_only)


class Embodiment(_Frozen):
    name: str = Field(min_length=1)
    description: str = ""
    control_rate_hz: PositiveFloat
    gripper_units: Literal["m", "normalized"]
    arms: tuple[ArmSpec, ...] = Field(min_length=1)
    cameras: tuple[CameraSpec, ...] = Field(min_length=1)
    topics: TopicSpec | None = None
    safety: SafetySpec

    @model_validator(mode="after")
    def _consistent(self) -> Embodiment:
        names = [joint.name for joint in self.joints]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"joint names must be unique; repeated: {duplicates}")
        arm_names = [arm.name for arm in self.arms]
        if len(set(arm_names)) != len(arm_names):
            raise ValueError(f"arm names must be unique; got {arm_names}")
        camera_names = [camera.name for camera in self.cameras]
        if len(set(camera_names)) != len(camera_names):
            raise ValueError(f"camera names must be unique; got {camera_names}")
        if self.safety.max_tick_interval_s < 1.0 / self.control_rate_hz:
            raise ValueError(
                f"safety.max_tick_interval_s {self.safety.max_tick_interval_s} is shorter than one control "
                f"period (1/{self.control_rate_hz} s)"
            )
        if self.topics is not None:
            for field in ("follower_state", "leader_state", "command"):
                keys = set(getattr(self.topics, field))
                if keys != set(arm_names):
                    raise ValueError(f"topics.{field} must name exactly the arms {arm_names}; got {sorted(keys)}")
            per_arm = {len(arm.joints) for arm in self.arms}
            count = len(self.topics.joint_names)
            if {count} != per_arm:
                raise ValueError(f"topics.joint_names has {count} names but arms have {sorted(per_arm)} joints")
        return self

    # Derived views: computed from the validated fields, never stored twice.
    @property
    def joints(self) -> tuple[JointSpec, ...]:
        return tuple(joint for arm in self.arms for joint in arm.joints)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(joint.name for joint in self.joints)

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    def joint_index(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(f"unknown joint {name!r}; known joints: {list(self.joint_names)}") from None

    def gripper_mask(self) -> np.ndarray:
        return np.array([joint.kind is JointKind.GRIPPER for joint in self.joints])

    def position_limits(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.array([joint.position[0] for joint in self.joints], dtype=np.float64)
        high = np.array([joint.position[1] for joint in self.joints], dtype=np.float64)
        return low, high


def load_embodiment(path: str | Path) -> Embodiment:
    """Read and validate an embodiment YAML; raise :class:`EmbodimentError` naming file, key and problem."""
    return load_model(path, Embodiment, what="embodiment file", error=EmbodimentError)
