"""Frame windows for the IDM, shared by training and the deployment decoder (numpy only).

The action at frame t is decoded from frames t-k .. t+k; at the edges of a sequence the indices are clamped
(the first frame repeats before the start, the last after the end). Channels are stacked camera-major, then
time, then RGB, the order the network was trained on.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["resize_video", "stack_windows", "window_indices"]


def resize_video(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) -> (T, height, width, 3) with area interpolation (the right filter for shrinking)."""
    height, width = size
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in frames])


def window_indices(length: int, window: int, step: int = 1) -> np.ndarray:
    """(length, 2k+1) source-frame indices of every window, clamped to [0, length - 1]."""
    offsets = np.arange(-window, window + 1) * step
    return np.clip(np.arange(length)[:, None] + offsets[None, :], 0, length - 1)


def stack_windows(video: np.ndarray, window: int, step: int = 1, centres: np.ndarray | None = None) -> np.ndarray:
    """video (cameras, T, H, W, 3) -> float32 (N, cameras * (2k+1) * 3, H, W) for the given centre frames."""
    cameras, length, height, width, _ = video.shape
    indices = window_indices(length, window, step)
    if centres is not None:
        indices = indices[centres]
    frames = video[:, indices]  # (cameras, N, 2k+1, H, W, 3)
    frames = np.moveaxis(frames, 1, 0)  # (N, cameras, 2k+1, H, W, 3)
    frames = np.moveaxis(frames, -1, 3)  # (N, cameras, 2k+1, 3, H, W)
    return frames.reshape(len(indices), cameras * indices.shape[1] * 3, height, width).astype(np.float32)
