"""A measuring instrument for the closed-loop ladder: a world model whose rollouts are degraded on purpose.

Wraps any world model (in practice the oracle, whose frames are the true future) and applies what an imperfect
learned model does to its frames, one effect per rung of the ladder, so the success each effect costs is measured
in closed loop instead of guessed:
- `vae`: every rollout encoded and decoded by a Wan VAE (a pipeline directory's `vae/`, hash-verified), exactly
  as the Wan backend's frames pass through it: what the VAE alone costs;
- `motion_scale`: the imagined future plays at that fraction of the true speed (0.6: the arms move 60 % as far);
- `blur_psnr_db`: a Gaussian blur whose strength is searched per rollout so the future frames sit at that PSNR
  against the originals (the learned model's measured fidelity, without its colour loss);
- `artifacts`: the artifact injector's settings (jitter, dropped / repeated frames, noise);
- `delay_s`: the rollout takes at least that long in all, frames untouched: what a slower model's latency alone
  costs.
Frame 0 (the observed frame) is left as it is except by the VAE, which the real backend also applies to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from eva_runtime.world_model.artifacts import ArtifactConfig, inject_artifacts
from eva_runtime.world_model.fidelity import frame_psnr_db
from eva_runtime.world_model.protocol import Rollout, RolloutRequest, WorldModel

__all__ = ["Degradation", "DegradedWorldModel", "blur_to_psnr", "scale_motion"]


@dataclass(frozen=True)
class Degradation:
    vae: str | None = None
    motion_scale: float = 1.0
    blur_psnr_db: float | None = None
    artifacts: dict = field(default_factory=dict)
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.delay_s <= 10.0:
            raise ValueError(f"degrade.delay_s must lie in [0, 10] s, got {self.delay_s}")
        if not 0.0 < self.motion_scale <= 1.0:
            raise ValueError(f"degrade.motion_scale must lie in (0, 1], got {self.motion_scale}")
        if self.blur_psnr_db is not None and not 10.0 <= self.blur_psnr_db <= 60.0:
            raise ValueError(f"degrade.blur_psnr_db must lie in [10, 60] dB, got {self.blur_psnr_db}")
        ArtifactConfig(**self.artifacts)  # refuses unknown keys and bad ranges now, not mid-episode

    @property
    def label(self) -> str:
        parts = []
        if self.vae:
            parts.append(f"vae:{Path(self.vae).name}")
        if self.motion_scale != 1.0:
            parts.append(f"motion{self.motion_scale:g}x")
        if self.blur_psnr_db is not None:
            parts.append(f"blur{self.blur_psnr_db:g}dB")
        if self.delay_s:
            parts.append(f"delay{self.delay_s:g}s")
        if self.artifacts:
            parts.append("artifacts:" + ",".join(f"{k}={v}" for k, v in sorted(self.artifacts.items())))
        return "+".join(parts) or "none"


def scale_motion(frames: np.ndarray, scale: float) -> np.ndarray:
    """(T, H, W, 3): frame k shows the source frame nearest to k * scale (frame 0 stays)."""
    index = np.minimum(np.round(np.arange(len(frames)) * scale).astype(int), len(frames) - 1)
    return frames[index]


def blur_to_psnr(frames: np.ndarray, target_db: float, iterations: int = 12) -> np.ndarray:
    """Frames 1.. blurred with one Gaussian sigma, found by bisection, whose PSNR vs the originals is the target
    (as close as the sigma range [0.05, 8] allows); frame 0 unchanged."""
    import cv2

    future = frames[1:]
    if len(future) == 0:
        return frames

    def blurred(sigma: float) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in future])

    low, high = 0.05, 8.0
    best = blurred(high)
    for _ in range(iterations):
        middle = (low * high) ** 0.5
        candidate = blurred(middle)
        if frame_psnr_db(future, candidate) > target_db:
            low = middle  # too faithful: blur more
        else:
            high, best = middle, candidate
    return np.concatenate([frames[:1], best])


class DegradedWorldModel:
    def __init__(self, inner: WorldModel, degradation: Degradation, seed: int = 0) -> None:
        self.inner = inner
        self.degradation = degradation
        self.model_id = f"{inner.model_id}~{degradation.label}"
        self.fps = inner.fps
        self.cameras = inner.cameras
        self._artifacts = ArtifactConfig(**degradation.artifacts)
        self._rng = np.random.default_rng(seed)
        # The planner process shares two cores with the control loop: one thread.
        self._vae = load_serving_vae(degradation.vae, threads=1) if degradation.vae else None

    def rollout(self, request: RolloutRequest) -> Rollout:
        began = time.perf_counter()
        rollout = self.inner.rollout(request)
        frames = {camera: np.stack([self._degrade(v) for v in batch]) for camera, batch in rollout.frames.items()}
        remaining = self.degradation.delay_s - (time.perf_counter() - began)
        if remaining > 0:
            time.sleep(remaining)  # the instrument models a slower model: only its latency, nothing else
        return replace(rollout, frames=frames, seconds=rollout.seconds + time.perf_counter() - began)

    def _degrade(self, video: np.ndarray) -> np.ndarray:
        d = self.degradation
        if d.motion_scale != 1.0:
            video = scale_motion(video, d.motion_scale)
        if self._artifacts.active:
            video = inject_artifacts(video, self._artifacts, self._rng)
        if d.blur_psnr_db is not None:
            video = blur_to_psnr(video, d.blur_psnr_db)
        if self._vae is not None:
            video = vae_round_trip(self._vae, video)
        return video


def vae_round_trip(vae, video: np.ndarray) -> np.ndarray:
    """A (T, H, W, 3) uint8 video encoded and decoded by a Wan VAE, as the Wan backend's frames are."""
    from eva_runtime.world_model.wan.latents import decode_latents, encode_frames

    return decode_latents(vae, encode_frames(vae, video[None]))[0]


def load_serving_vae(source: str, threads: int | None = None):
    """A hash-verified Wan pipeline directory's VAE, or a verified VAE candidate file, with the serving CPU fast
    paths; `threads`: torch's CPU threads (None: leave them)."""
    import torch

    from eva_runtime.training.vae_candidates import load_verified_vae
    from eva_runtime.world_model.wan.cpu_fast_paths import install_cpu_fast_paths

    if threads is not None:
        torch.set_num_threads(threads)
    vae = load_verified_vae(source)
    if vae.device.type == "cpu":
        install_cpu_fast_paths(vae)  # as the Wan backend serves it (same frames within 1 grey level, faster)
    return vae
