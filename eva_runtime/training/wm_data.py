"""World-model training data: recorded episodes as videos at the model's fps and image size, and clips of them.

Frames are resampled from the recording fps to the world model's fps (which is the IDM's, so a rollout decodes
without resampling) by taking every s-th frame (s = recorded / model fps, an integer), resized once with area
interpolation (the same resize the planner applies before the IDM) and kept as uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.idm.windows import resize_video

__all__ = ["EpisodeVideo", "clip_starts", "load_videos", "to_model_range"]


@dataclass(frozen=True)
class EpisodeVideo:
    name: str
    frames: np.ndarray  # (N, H, W, 3) uint8 at the model's fps
    actions: np.ndarray  # (N, J) commanded joints at the same instants
    instruction: str
    seed: int | None


def load_videos(
    data: Path | str | Sequence[Path | str], camera: str, fps: float, image_size: tuple[int, int]
) -> list[EpisodeVideo]:
    """Every episode of an HDF5 episode directory (or an explicit list of files) as one camera's video."""
    # Imported here: training from a video cache (`video_cache.py`) needs neither HDF5 nor the IDM's config.
    from eva_runtime.idm.dataset import frame_step
    from eva_runtime.records.hdf5_episodes import list_episodes, read_episode

    paths = list_episodes(data) if isinstance(data, Path | str) and Path(data).is_dir() else list(data)
    if not paths:
        raise ValueError(f"no episodes found in {data}")
    videos = []
    for path in paths:
        episode = read_episode(path)
        if camera not in episode.images:
            raise ValueError(f"{path}: no camera {camera!r} (has {sorted(episode.images)})")
        step = frame_step(episode.fps, fps, path)
        frames = resize_video(episode.images[camera][::step], image_size)
        videos.append(EpisodeVideo(Path(path).stem, frames, episode.action[::step], episode.instruction, episode.seed))
    return videos


def clip_starts(lengths: Sequence[int], clip: int, stride: int = 1) -> np.ndarray:
    """(episode, start) pairs of every clip of `clip` frames that fits inside its episode."""
    pairs = [(e, s) for e, n in enumerate(lengths) for s in range(0, n - clip + 1, stride)]
    if not pairs:
        raise ValueError(f"no episode is at least {clip} frames long")
    return np.asarray(pairs, dtype=np.int64)


def to_model_range(frames: np.ndarray):
    """uint8 (..., T, H, W, 3) -> float tensor (..., 3, T, H, W) in [-1, 1], the Wan VAE's input range."""
    import torch

    video = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0)
    return video.movedim(-1, -4)
