"""A tiny, learnable IDM problem shared by the tests: a bright square whose position follows joints 0 and 1, the
small network configuration that learns it in a few steps, and its training settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.train import TrainSettings
from eva_runtime.records.hdf5_episodes import Episode, episode_path, write_episode

JOINT_NAMES = tuple(
    f"{side}_{joint}" for side in ("left", "right") for joint in (*(f"j{i}" for i in range(1, 7)), "gripper")
)
GRIPPERS = (6, 13)
IMAGE = 32
FPS = 12.5


def write_synthetic_dataset(
    directory: Path, episodes: int = 4, frames: int = 24, size: int = IMAGE, seed: int = 0, fps: float = FPS
) -> list[Path]:
    """Episodes whose frames show a bright 4x4 square at (row, column) = f(joint 1, joint 0) on a dark background.

    Joints 0 and 1 are smooth random walks in [-1, 1]; the other arm joints are 0 and the grippers 0.5.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(episodes):
        walk = np.cumsum(rng.normal(0.0, 0.08, size=(frames, 2)), axis=0) + rng.uniform(-0.5, 0.5, size=2)
        walk = np.clip(walk, -1.0, 1.0)
        action = np.zeros((frames, len(JOINT_NAMES)))
        action[:, list(GRIPPERS)] = 0.5
        action[:, :2] = walk
        images = np.full((frames, size, size, 3), 20, dtype=np.uint8)
        for t in range(frames):
            column = round((walk[t, 0] + 1) / 2 * (size - 4))
            row = round((walk[t, 1] + 1) / 2 * (size - 4))
            images[t, row : row + 4, column : column + 4] = 230
        episode = Episode(
            images={"cam_high": images},
            qpos=action,
            action=action,
            qvel=None,
            fps=fps,
            embodiment="synthetic",
            task="square",
            instruction="move the square",
            joint_names=JOINT_NAMES,
            seed=index,
        )
        paths.append(write_episode(episode_path(directory, index), episode))
    return paths


def tiny_config(**overrides: object) -> IdmConfig:
    """A small, fast IDM over the synthetic dataset's camera and image size."""
    fields: dict[str, object] = {
        "cameras": ("cam_high",),
        "image_size": (IMAGE, IMAGE),
        "fps": FPS,
        "joint_names": JOINT_NAMES,
        "gripper_indices": GRIPPERS,
        "window": 1,
        "width": 8,
        "keypoints": 8,
        "hidden": (32, 16),
    }
    fields.update(overrides)
    return IdmConfig(**fields)


def tiny_settings(data: Path, out: Path, **overrides: object) -> TrainSettings:
    fields: dict[str, object] = {
        "data": data,
        "out": out,
        "steps": 12,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "held_out": 0.25,
        "seed": 0,
        "eval_every": 6,
        "threads": 1,
    }
    fields.update(overrides)
    return TrainSettings(**fields)


def pixels(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random images in [0, 255) as float, (B, C, H, W), reproducible by seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=generator) * 255
