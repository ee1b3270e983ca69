"""Sample videos next to the checkpoints: ground truth and generated clips side by side, as GIF (any viewer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["side_by_side", "write_gif"]


def side_by_side(*videos: np.ndarray, gap: int = 2) -> np.ndarray:
    """(T, H, W, 3) uint8 videos of equal T and H joined horizontally with a white gap."""
    frames = min(len(v) for v in videos)
    height = videos[0].shape[1]
    spacer = np.full((frames, height, gap, 3), 255, np.uint8)
    parts = []
    for index, video in enumerate(videos):
        if index:
            parts.append(spacer)
        parts.append(video[:frames])
    return np.concatenate(parts, axis=2)


def write_gif(path: Path | str, video: np.ndarray, fps: float, scale: int = 2) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in video]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    return path
