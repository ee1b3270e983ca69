"""Where the flow-matching loss looks: a weight per latent cell that favours what the task needs (the cube, the arms).

The SFT transformer, trained with a plain velocity MSE, learns the mean future of a scene that is mostly a still
grey table: its imagined arms are smears and, after the grasp, the 3-pixel cube is gone (docs/world_model.md). The
VAE had the same failure until its loss weighted the cube's saturated pixels; this does the same for the
transformer. A pixel is foreground when it is saturated (the cube) or differs from its episode's per-pixel median
(anything that moves: the arms, the carried cube). The mask is max-pooled onto the latent grid (the VAE's spatial
factor, and its causal time grouping: the first frame alone, then groups of `temporal`), so a latent cell that
holds any foreground pixel weighs `1 + foreground_weight`. The loss divides by the weights' sum, so its scale
stays that of the plain MSE where nothing is foreground.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MOTION_MIN", "SATURATION_MIN", "clip_weights", "foreground_mask", "latent_weights", "training_weights"]

SATURATION_MIN = 0.5  # (max - min) / max of a pixel's RGB: the red cube is ~0.9, the grey scene below 0.1
MOTION_MIN = 30  # summed |RGB - episode median| of a pixel (0-765): the arms against the table are > 100


def foreground_mask(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H, W) bool: saturated, or away from the episode's per-pixel median."""
    rgb = frames.astype(np.int16)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    saturated = (high - low) > SATURATION_MIN * np.maximum(high, 1)
    median = np.median(rgb, axis=0).astype(np.int16)
    moving = np.abs(rgb - median).sum(axis=-1) > MOTION_MIN
    return saturated | moving


def latent_weights(mask: np.ndarray, spatial: int, temporal: int, foreground_weight: float) -> np.ndarray:
    """(T, H, W) bool of one clip, T = 1 + k * temporal -> (t, H / spatial, W / spatial) float32 weights."""
    frames, height, width = mask.shape
    if (frames - 1) % temporal or height % spatial or width % spatial:
        raise ValueError(f"clip {mask.shape} does not fit the VAE's factors (time {temporal}, space {spatial})")
    pooled = mask.reshape(frames, height // spatial, spatial, width // spatial, spatial).any(axis=(2, 4))
    groups = [pooled[:1]] + [pooled[1 + i : 1 + i + temporal] for i in range(0, frames - 1, temporal)]
    cells = np.stack([group.any(axis=0) for group in groups])
    return (1.0 + foreground_weight * cells).astype(np.float32)


def clip_weights(
    padded: list[np.ndarray], pairs, clip: int, spatial: int, temporal: int, foreground_weight: float
) -> np.ndarray:
    """(N, t, h, w) weights of the clips `pairs` ((episode, start frame), as `padded_clips` cuts them) of the
    padded episode videos, in that order."""
    masks = [foreground_mask(frames) for frames in padded]
    return np.stack([latent_weights(masks[e][s : s + clip], spatial, temporal, foreground_weight) for e, s in pairs])


def training_weights(videos, run, candidate) -> np.ndarray:
    """The weights of a transformer run's training clips (`run`: its TransformerRun; `candidate`: its VAE's), cut
    as `encode_padded_clips` cuts the latents."""
    from eva_runtime.training.wm_run_samples import padded_clips

    clip = run.history_frames - 1 + run.horizon
    padded, pairs = padded_clips(videos, run.history_frames, run.end_padding, clip, run.clip_stride)
    factors = (candidate.spatial_factor, candidate.temporal_factor)
    return clip_weights(padded, pairs, clip, *factors, run.foreground_weight)
