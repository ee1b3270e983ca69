"""Video artifact injection: the failure modes of an unaligned video generator, applied to clean frames.

Jitter (a random whole-frame shift), dropped frames (the previous frame shown again), repeated frames (the
sequence stalls for a frame and then skips), temporal jumps (the sequence leaps ahead), and pixel noise. Frame
0, the conditioning frame, is never altered. Deterministic for a given generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ArtifactConfig", "inject_artifacts"]


@dataclass(frozen=True)
class ArtifactConfig:
    jitter_px: int = 0  # max shift in pixels, per frame, uniformly in both axes
    drop_prob: float = 0.0
    repeat_prob: float = 0.0
    jump_prob: float = 0.0
    jump_frames: int = 3
    noise_std: float = 0.0  # in 0-255 intensity units

    def __post_init__(self) -> None:
        for name in ("drop_prob", "repeat_prob", "jump_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ArtifactConfig.{name} must lie in [0, 1], got {value}")
        if self.jitter_px < 0 or self.noise_std < 0 or self.jump_frames < 1:
            raise ValueError(f"ArtifactConfig values must be non-negative (jump_frames >= 1): {self}")

    @property
    def active(self) -> bool:
        return bool(self.jitter_px or self.drop_prob or self.repeat_prob or self.jump_prob or self.noise_std)


def _timeline(length: int, config: ArtifactConfig, rng: np.random.Generator) -> np.ndarray:
    """Which source frame each output frame shows (frame 0 is always itself)."""
    index = np.arange(length)
    source = 0
    for k in range(1, length):
        roll = rng.random(3)
        if roll[0] < config.drop_prob:
            index[k] = index[k - 1]  # dropped: the previous frame is shown again; time goes on
            source += 1
            continue
        if roll[1] < config.repeat_prob:
            index[k] = index[k - 1]  # stall without advancing the source
            continue
        source += config.jump_frames if roll[2] < config.jump_prob else 1
        index[k] = min(source, length - 1)
    return index


def inject_artifacts(frames: np.ndarray, config: ArtifactConfig, rng: np.random.Generator) -> np.ndarray:
    """frames: (T, H, W, 3) uint8 -> same shape with the configured artifacts; the timeline is shared by callers
    that pass the same generator state, so apply it per camera with a copy of the generator."""
    if not config.active:
        return frames
    out = frames[_timeline(len(frames), config, rng)].copy()
    if config.jitter_px:
        for k in range(1, len(out)):
            dy, dx = rng.integers(-config.jitter_px, config.jitter_px + 1, size=2)
            out[k] = np.roll(out[k], (int(dy), int(dx)), axis=(0, 1))
    if config.noise_std:
        noise = rng.normal(0.0, config.noise_std, size=out[1:].shape)
        out[1:] = np.clip(out[1:].astype(np.float64) + noise, 0, 255).astype(np.uint8)
    return out
