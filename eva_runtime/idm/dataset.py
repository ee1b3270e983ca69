"""IDM training data: episodes (HDF5 files or LeRobot v3 episodes) loaded into memory at the network's image size,
windows and an episode split.

Frames are resized once at load (OpenCV, area interpolation) and kept as uint8. The IDM may run at a lower fps
than the recording: with recording fps F and IDM fps f (F/f an integer s), the window around frame t uses frames
t - k s .. t + k s, and every recorded frame is a training centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.windows import resize_video, stack_windows
from eva_runtime.records.hdf5_episodes import Episode, read_episode
from eva_runtime.records.lerobot_episodes import LeRobotEpisodeRef
from eva_runtime.records.lerobot_reader import read_lerobot_episode

__all__ = [
    "EpisodeData",
    "EpisodeSource",
    "IdmDataset",
    "LeRobotSource",
    "load_episodes",
    "source_name",
    "source_path",
    "split_by_episode",
]

# An episode to load: an HDF5 episode file, or a LeRobot v3 dataset root with one of its episodes.
LeRobotSource = tuple[Path, LeRobotEpisodeRef]
EpisodeSource = Path | str | LeRobotSource
_Source = TypeVar("_Source", Path, str, LeRobotSource)


@dataclass(frozen=True)
class EpisodeData:
    path: Path  # the episode file, or root/episode_<index> for a LeRobot episode
    video: np.ndarray  # (cameras, T, H, W, 3) uint8 at the network's image size
    actions: np.ndarray  # (T, dof) float64
    step: int  # recorded frames between two IDM frames


def frame_step(recorded_fps: float, idm_fps: float, path: Path | str = "") -> int:
    ratio = recorded_fps / idm_fps
    if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-9:
        raise ValueError(f"{path}: recorded at {recorded_fps} fps, which is not a multiple of the IDM's {idm_fps} fps")
    return round(ratio)


def source_path(source: EpisodeSource) -> Path:
    """The episode's file, or ``root/episode_<index>`` for a LeRobot episode (which has no file of its own)."""
    if isinstance(source, tuple):
        root, ref = source
        return Path(root) / ref.name
    return Path(source)


def source_name(source: EpisodeSource) -> str:
    """The name recorded in split.json: the HDF5 file name, or ``episode_<index>`` for a LeRobot episode."""
    return source[1].name if isinstance(source, tuple) else Path(source).name


def _read(source: EpisodeSource) -> Episode:
    if isinstance(source, tuple):
        return read_lerobot_episode(*source)
    return read_episode(source)


def load_episodes(paths: Sequence[EpisodeSource], config: IdmConfig) -> list[EpisodeData]:
    """Load HDF5 episode files and/or ``(root, ref)`` LeRobot episodes; errors name ``source_path``."""
    episodes = []
    for source in paths:
        path = source_path(source)
        episode = _read(source)
        if tuple(episode.joint_names) != tuple(config.joint_names):
            raise ValueError(f"{path}: joint names {episode.joint_names} differ from the IDM's {config.joint_names}")
        missing = [camera for camera in config.cameras if camera not in episode.images]
        if missing:
            raise ValueError(f"{path}: no camera(s) {missing}; the episode has {sorted(episode.images)}")
        video = np.stack([resize_video(episode.images[camera], config.image_size) for camera in config.cameras])
        episodes.append(EpisodeData(path, video, episode.action, frame_step(episode.fps, config.fps, path)))
    return episodes


def _order(source: EpisodeSource) -> object:
    # Paths sort as themselves (the HDF5 split is unchanged); LeRobot episodes by root, then episode index.
    return (source[0], source[1].index) if isinstance(source, tuple) else source


def split_by_episode(paths: Sequence[_Source], held_out: float, seed: int) -> tuple[list[_Source], list[_Source]]:
    """(train, validation): whole episodes on each side, so no frame of a validation episode is trained on."""
    if not 0 < held_out < 1:
        raise ValueError(f"held-out fraction must lie in (0, 1), got {held_out}")
    order = np.random.default_rng(seed).permutation(len(paths))
    count = max(1, round(held_out * len(paths)))
    if count >= len(paths):
        raise ValueError(f"{len(paths)} episodes are too few to hold {count} out")
    validation = sorted((paths[i] for i in order[:count]), key=_order)
    train = sorted((paths[i] for i in order[count:]), key=_order)
    return train, validation


class IdmDataset:
    """All (episode, centre frame) samples; `batch` stacks their windows into network input."""

    def __init__(self, episodes: list[EpisodeData], config: IdmConfig) -> None:
        if not episodes:
            raise ValueError("the IDM dataset needs at least one episode")
        self.episodes = episodes
        self.config = config
        self.index = np.array([(e, t) for e, episode in enumerate(episodes) for t in range(len(episode.actions))])

    def __len__(self) -> int:
        return len(self.index)

    def actions(self) -> np.ndarray:
        return np.concatenate([episode.actions for episode in self.episodes])

    def batch(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """pixels float32 (B, C, H, W) in 0..255 and actions float32 (B, dof) for sample numbers."""
        pixels, actions = [], []
        for e, t in self.index[samples]:
            episode = self.episodes[e]
            pixels.append(stack_windows(episode.video, self.config.window, episode.step, np.array([t]))[0])
            actions.append(episode.actions[t])
        return np.stack(pixels), np.stack(actions).astype(np.float32)
