"""The flow-matching denoising loop around a `WanTransformer3DModel`, with clean conditioning latent frames.

Wan2.2-style image-to-video (`expand_timesteps=True`): the first `conditioned` latent frames are the clean latents
of the observed frames; every denoising step writes them back into the model input and gives their tokens
timestep 0 (per-token timesteps, shape [B, tokens]). With one conditioning latent frame this is exactly the
diffusers pipeline's loop (tested); with more it is diffusion-forcing history conditioning (several past frames
clean, the future noisy). The Euler update over the scheduler's shifted sigmas is written out here because the
alignment step (Flow-GRPO) needs the same loop with a stochastic step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Denoiser", "euler_sample", "flow_sigmas", "token_timesteps"]


def flow_sigmas(scheduler, steps: int) -> torch.Tensor:
    """The scheduler's shifted sigmas for `steps` steps, with the final 0 appended (steps + 1 values)."""
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.float().clone()


def token_timesteps(sigma: torch.Tensor, latent_shape: tuple[int, ...], conditioned: int, patch=(1, 2, 2)):
    """Per-token timesteps [B, tokens]: sigma * 1000 on noisy frames, 0 on the conditioning frames."""
    batch, _, frames, height, width = latent_shape
    per_frame = torch.ones(frames)
    per_frame[:conditioned] = 0.0
    tokens_per_frame = (height // patch[1]) * (width // patch[2])
    mask = per_frame.repeat_interleave(tokens_per_frame // patch[0])
    sigma = sigma.reshape(-1, 1) if sigma.ndim else sigma.reshape(1, 1)
    return (sigma * 1000.0 * mask).expand(batch, -1)


@dataclass
class Denoiser:
    """Velocity prediction for a batch with `conditioned` clean latent frames (and optional CFG)."""

    transformer: torch.nn.Module
    prompt_embeds: torch.Tensor  # [B, L, D]
    condition: torch.Tensor  # [B, z, t, h, w]; only frames < conditioned are read
    conditioned: int = 1
    negative_embeds: torch.Tensor | None = None
    guidance: float = 1.0

    def mask(self, latents: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(1, 1, latents.shape[2], 1, 1, dtype=latents.dtype, device=latents.device)
        mask[:, :, : self.conditioned] = 0.0
        return mask

    def inject(self, latents: torch.Tensor) -> torch.Tensor:
        """Write the clean conditioning frames into `latents`."""
        mask = self.mask(latents)
        return (1 - mask) * self.condition.to(latents.dtype) + mask * latents

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        model_input = self.inject(latents)
        dtype = next(self.transformer.parameters()).dtype
        timestep = token_timesteps(sigma, tuple(latents.shape), self.conditioned).to(latents.device)
        patch = getattr(getattr(self.transformer, "config", None), "patch_size", (1, 2, 2))
        if tuple(patch) != (1, 2, 2):
            raise ValueError(f"per-token timesteps assume patch size (1, 2, 2), got {patch}")
        velocity = self.transformer(
            hidden_states=model_input.to(dtype),
            timestep=timestep,
            encoder_hidden_states=self.prompt_embeds.to(dtype),
            return_dict=False,
        )[0].float()
        if self.negative_embeds is not None and self.guidance != 1.0:
            unconditional = self.transformer(
                hidden_states=model_input.to(dtype),
                timestep=timestep,
                encoder_hidden_states=self.negative_embeds.to(dtype),
                return_dict=False,
            )[0].float()
            velocity = unconditional + self.guidance * (velocity - unconditional)
        return velocity


@torch.no_grad()
def euler_sample(denoiser: Denoiser, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Deterministic (ODE) sampling: x <- x + (sigma_next - sigma) v, then the clean frames written back."""
    latents = noise.float()
    for index in range(len(sigmas) - 1):
        sigma, following = sigmas[index], sigmas[index + 1]
        velocity = denoiser.velocity(latents, sigma)
        latents = latents + (following - sigma) * velocity
    return denoiser.inject(latents)
