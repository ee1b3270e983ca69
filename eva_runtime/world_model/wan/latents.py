"""Frames <-> normalised Wan latents, the way diffusers' Wan pipelines do it.

Pixels go to [-1, 1]; the VAE's latent mean (its `mode`, deterministic) is normalised per channel with the VAE
config's `latents_mean` / `latents_std`, which is the space the transformer denoises in.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["decode_latents", "encode_frames", "latent_frames"]


def _statistics(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, dtype=like.dtype, device=like.device).view(shape)
    std = torch.tensor(vae.config.latents_std, dtype=like.dtype, device=like.device).view(shape)
    return mean, std


def latent_frames(frames: int, temporal_factor: int) -> int:
    """Latent frames of a causal Wan VAE for `frames` video frames (which must be 1 + k * factor)."""
    if frames < 1 or (frames - 1) % temporal_factor:
        raise ValueError(f"a Wan video has 1 + k * {temporal_factor} frames, got {frames}")
    return (frames - 1) // temporal_factor + 1


@torch.no_grad()
def encode_frames(vae, frames: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> normalised latents (B, z, t, h, w) in float32."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).to(device=vae.device, dtype=vae.dtype).div(127.5).sub(1.0)
    latents = vae.encode(video.movedim(-1, 1)).latent_dist.mode().float()
    mean, std = _statistics(vae, latents)
    return (latents - mean) / std


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> np.ndarray:
    """Normalised latents (B, z, t, h, w) -> uint8 (B, T, H, W, 3)."""
    mean, std = _statistics(vae, latents.float())
    video = vae.decode((latents.float() * std + mean).to(vae.dtype)).sample.float()
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(1, -1).cpu().numpy()
