"""IDM configuration: what the network sees (cameras, image size, frame window, fps) and how it is built.

One frozen object is the single source of the IDM's timing: `fps` is the rate of the frames it decodes and of
the actions it outputs; the window is frames t-k..t+k at that fps. It travels with every checkpoint and with the
exported ONNX file (as JSON metadata), and loading refuses a file whose configuration does not parse.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["IdmConfig"]


class IdmConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cameras: tuple[str, ...] = Field(default=("cam_high",), min_length=1)
    image_size: tuple[int, int] = (64, 64)  # (height, width) fed to the network
    window: int = Field(default=1, ge=0, le=8)  # k: frames t-k .. t+k
    fps: float = Field(default=12.5, gt=0)  # frame and action rate the IDM works at
    joint_names: tuple[str, ...] = Field(min_length=1)
    gripper_indices: tuple[int, ...] = (6, 13)
    backbone: Literal["small", "resnet18", "resnet50"] = "small"
    width: int = Field(default=32, ge=4)  # channels of the first stage (small backbone)
    keypoints: int = Field(default=64, ge=2)  # channels entering the spatial softmax
    hidden: tuple[int, ...] = (512, 256)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    # Per-joint normalisation of actions (filled from the training data).
    action_mean: tuple[float, ...] = ()
    action_std: tuple[float, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> IdmConfig:
        dof = len(self.joint_names)
        for name in ("action_mean", "action_std"):
            values = getattr(self, name)
            if values and len(values) != dof:
                raise ValueError(f"{name} needs {dof} values (one per joint), got {len(values)}")
        if bool(self.action_mean) != bool(self.action_std):
            raise ValueError("action_mean and action_std come together (both set or both empty)")
        if any(s <= 0 for s in self.action_std):
            raise ValueError("action_std values must be positive")
        if any(not 0 <= i < dof for i in self.gripper_indices):
            raise ValueError(f"gripper_indices {self.gripper_indices} outside 0..{dof - 1}")
        if min(self.image_size) < 16:
            raise ValueError(f"image_size {self.image_size} is too small (min 16)")
        return self

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def frames_per_sample(self) -> int:
        return 2 * self.window + 1

    @property
    def input_channels(self) -> int:
        return 3 * self.frames_per_sample * len(self.cameras)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IdmConfig:
        return cls.model_validate(json.loads(text))
