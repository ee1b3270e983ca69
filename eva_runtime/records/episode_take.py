"""One demonstration being sampled from live streams, until it becomes an :class:`~eva_runtime.records.hdf5_episodes.
Episode`: the samples taken, the samples skipped (and why the last one was), and the messages refused meanwhile.

ROS-free, so a recorder on another transport keeps the same accounting; ``eva_runtime.ros.record_node`` feeds it.
A sample is one frame per camera, one follower reading ``(position, velocity or None, effort or None)`` per arm
and one leader position per arm, in the embodiment's arm order. ``qvel`` / ``effort`` are stored only when every
sample carried them for every arm: a partly measured column would read as data where it is placeholder zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.embodiment import Embodiment
from eva_runtime.records.hdf5_episodes import Episode

__all__ = ["EpisodeSettings", "FollowerReading", "Take"]

FollowerReading = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # position, velocity, effort


@dataclass(frozen=True)
class EpisodeSettings:
    """What the operator set for one episode, read when it started."""

    out_dir: Path
    task: str
    instruction: str
    sim: bool
    compression: str | None
    max_frames: int  # 0: no limit


class Take:
    """The samples of one episode. Not thread-safe: the recorder calls it under its own lock."""

    def __init__(self, settings: EpisodeSettings, refused_before: int) -> None:
        self.settings = settings
        self.images: dict[str, list[np.ndarray]] = {}
        self.qpos: list[np.ndarray] = []
        self.qvel: list[np.ndarray | None] = []
        self.effort: list[np.ndarray | None] = []
        self.action: list[np.ndarray] = []
        self.skipped = 0
        self.last_skip = ""
        self._refused_before = refused_before  # the recorder's running count when the episode started
        self.refused = 0
        self.write_error = ""
        self._frames = 0

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def full(self) -> bool:
        return 0 < self.settings.max_frames <= self.frames

    def skip(self, why: str) -> None:
        self.skipped += 1
        self.last_skip = why

    def add(
        self, images: Mapping[str, np.ndarray], follower: Sequence[FollowerReading], leader: Sequence[np.ndarray]
    ) -> None:
        for camera, image in images.items():
            self.images.setdefault(camera, []).append(image)
        self.qpos.append(np.concatenate([reading[0] for reading in follower]))
        for field, column in ((1, self.qvel), (2, self.effort)):
            parts = [reading[field] for reading in follower]
            column.append(None if any(part is None for part in parts) else np.concatenate(parts))
        self.action.append(np.concatenate(list(leader)))
        self._frames += 1

    def end(self, refused_now: int) -> None:
        """Close the accounting: the messages refused since the episode started."""
        self.refused = refused_now - self._refused_before

    def summary(self, fps: float) -> str:
        text = f"{self.frames} frames at {fps:g} Hz, {self.skipped} samples skipped, {self.refused} messages refused"
        if self.full:
            text += f", frame limit {self.settings.max_frames} reached"
        return text + (f" (last skipped: {self.last_skip})" if self.last_skip else "")

    def episode(self, embodiment: Embodiment, fps: float) -> Episode:
        """The samples as an Episode (EpisodeError when they cannot be stored, e.g. beyond float32). The take
        lets go of its samples, so a large episode is not held twice while it waits to be written."""

        def measured(column: list[np.ndarray | None]) -> np.ndarray | None:
            return None if any(row is None for row in column) else np.stack(column)

        try:
            return self._episode(embodiment, fps, measured)
        finally:
            self.images, self.qpos, self.qvel, self.effort, self.action = {}, [], [], [], []

    def _episode(self, embodiment: Embodiment, fps: float, measured) -> Episode:
        return Episode(
            images={camera: np.stack(frames) for camera, frames in self.images.items()},
            qpos=np.stack(self.qpos),
            action=np.stack(self.action),
            qvel=measured(self.qvel),
            effort=measured(self.effort),
            fps=fps,
            embodiment=embodiment.name,
            task=self.settings.task,
            instruction=self.settings.instruction,
            joint_names=embodiment.joint_names,
            sim=self.settings.sim,
        )
