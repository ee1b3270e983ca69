"""IDM training data: HDF5 episodes loaded into memory at the network's image size, windows and an episode split.

Frames are resized once at load (OpenCV, area interpolation) and kept as uint8. The IDM may run at a lower fps
than the recording: with recording fps F and IDM fps f (F/f an integer s), the window around frame t uses frames
t - k s .. t + k s, and every recorded frame is a training centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.windows import resize_video, stack_windows
from eva_runtime.records.hdf5_episodes import read_episode

__all__ = ["EpisodeData", "IdmDataset", "load_episodes", "split_by_episode"]


@dataclass(frozen=True)
class EpisodeData:
    path: Path
    video: np.ndarray  # (cameras, T, H, W, 3) uint8 at the network's image size
    actions: np.ndarray  # (T, dof) float64
    step: int  # recorded frames between two IDM frames


def frame_step(recorded_fps: float, idm_fps: float, path: Path | str = "") -> int:
    ratio = recorded_fps / idm_fps
    if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-9:
        raise ValueError(f"{path}: recorded at {recorded_fps} fps, which is not a multiple of the IDM's {idm_fps} fps")
    return round(ratio)


def load_episodes(paths: list[Path], config: IdmConfig) -> list[EpisodeData]:
    episodes = []
    for path in paths:
        episode = read_episode(path)
        if tuple(episode.joint_names) != tuple(config.joint_names):
            raise ValueError(f"{path}: joint names {episode.joint_names} differ from the IDM's {config.joint_names}")
        missing = [camera for camera in config.cameras if camera not in episode.images]
        if missing:
            raise ValueError(f"{path}: no camera(s) {missing}; the episode has {sorted(episode.images)}")
        video = np.stack([resize_video(episode.images[camera], config.image_size) for camera in config.cameras])
        episodes.append(EpisodeData(Path(path), video, episode.action, frame_step(episode.fps, config.fps, path)))
    return episodes


def split_by_episode(paths: list[Path], held_out: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, validation): whole episodes on each side, so no frame of a validation episode is trained on."""
    if not 0 < held_out < 1:
        raise ValueError(f"held-out fraction must lie in (0, 1), got {held_out}")
    order = np.random.default_rng(seed).permutation(len(paths))
    count = max(1, round(held_out * len(paths)))
    if count >= len(paths):
        raise ValueError(f"{len(paths)} episodes are too few to hold {count} out")
    validation = sorted(paths[i] for i in order[:count])
    train = sorted(paths[i] for i in order[count:])
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
