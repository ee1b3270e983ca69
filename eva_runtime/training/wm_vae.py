"""Train the tiny Wan VAE (`AutoencoderKLWan`) on recorded frames, and measure what it loses.

No pretrained Wan VAE can be downloaded here, so the tiny model's VAE is trained from scratch on the robot's own
video: L1 reconstruction on short clips (one image-path frame plus one temporal chunk, so both of the causal
VAE's paths learn) with a small KL term that keeps the latent well-scaled for diffusion. After training, the
per-channel latent mean and std over the training clips go into the VAE config (`latents_mean`,
`latents_std`), which is how diffusers' Wan pipelines normalise latents.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from eva_runtime.training.wm_data import EpisodeVideo, clip_starts, to_model_range

__all__ = ["VaeSettings", "latent_statistics", "reconstruction_psnr", "train_vae"]


@dataclass(frozen=True)
class VaeSettings:
    steps: int = 700
    batch: int = 8
    clip: int = 5  # 1 + temporal factor: the first frame goes through the image path, the rest one chunk
    lr: float = 1e-3
    kl_weight: float = 1e-6
    seed: int = 0
    # Second phase on clips as long as the world model's: chunks after the first read the causal cache of the
    # chunk before, a path 5-frame clips never exercise (their reconstructions fall from 29 to 11 dB after the
    # first chunk without it).
    finetune_steps: int = 250
    finetune_clip: int = 17
    finetune_batch: int = 4
    finetune_lr: float = 3e-4

    def finetune(self) -> VaeSettings:
        return VaeSettings(
            steps=self.finetune_steps,
            batch=self.finetune_batch,
            clip=self.finetune_clip,
            lr=self.finetune_lr,
            kl_weight=self.kl_weight,
            seed=self.seed + 1,
            finetune_steps=0,
        )


def _batch(videos: list[EpisodeVideo], pairs: np.ndarray, rng: np.random.Generator, size: int, clip: int):
    chosen = pairs[rng.integers(0, len(pairs), size)]
    return to_model_range(np.stack([videos[e].frames[s : s + clip] for e, s in chosen]))


def train_vae(vae, videos: list[EpisodeVideo], settings: VaeSettings, progress=None) -> list[float]:
    """Train in place; returns the loss per step. `progress(step, loss)` is called every step."""
    import torch

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    pairs = clip_starts([len(v.frames) for v in videos], settings.clip)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.lr, weight_decay=0.0)
    warmup = max(1, settings.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / settings.steps))),
    )
    vae.train()
    losses = []
    for step in range(settings.steps):
        video = _batch(videos, pairs, rng, settings.batch, settings.clip)
        posterior = vae.encode(video).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / video[0].numel()
        loss = (reconstruction - video).abs().mean() + settings.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    vae.eval()
    return losses


def latent_statistics(
    vae,
    videos: list[EpisodeVideo],
    clip: int,
    samples: int = 64,
    seed: int = 0,
    *,
    device="cpu",
    batch: int = 8,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the VAE's latent means over random clips (the pipeline's normalisation).

    Clips are encoded ``batch`` at a time on ``device``. The same clips are drawn whatever the batch, but batched
    convolutions sum in another order, so each caller keeps the batch its saved statistics were computed with.
    """
    import torch

    rng = np.random.default_rng(seed)
    pairs = clip_starts([len(v.frames) for v in videos], clip)
    latents = []
    with torch.no_grad():
        for start in range(0, samples, batch):
            video = _batch(videos, pairs, rng, min(batch, samples - start), clip).to(device)
            latents.append(vae.encode(video).latent_dist.mode().float().cpu())
    z = torch.cat(latents).movedim(1, 0).reshape(latents[0].shape[1], -1)
    return z.mean(1).tolist(), z.std(1).clamp_min(1e-3).tolist()


def reconstruction_psnr(vae, videos: list[EpisodeVideo], clip: int, samples: int = 32, seed: int = 1) -> float:
    """Mean PSNR (dB, on uint8 frames) of encode -> decode over random clips."""
    import torch

    rng = np.random.default_rng(seed)
    pairs = clip_starts([len(v.frames) for v in videos], clip)
    values = []
    with torch.no_grad():
        for e, s in pairs[rng.integers(0, len(pairs), samples)]:
            frames = videos[e].frames[s : s + clip]
            decoded = vae.decode(vae.encode(to_model_range(frames[None])).latent_dist.mode()).sample
            values.append(psnr(frames, to_uint8(decoded[0])))
    return float(np.mean(values))


def to_uint8(video) -> np.ndarray:
    """(3, T, H, W) tensor in [-1, 1] -> (T, H, W, 3) uint8."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().movedim(0, -1).cpu().numpy()


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    from eva_runtime.world_model.fidelity import frame_psnr_db

    return frame_psnr_db(reference, estimate)


def timed(function, *args, **kwargs):
    began = time.perf_counter()
    return function(*args, **kwargs), time.perf_counter() - began
