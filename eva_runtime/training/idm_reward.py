"""The alignment reward: latents -> frames (VAE) -> joint actions (frozen ONNX IDM) -> executability (torch).

Exactly the planner's scoring path (same IDM file, same smoothing, same reward constants), batched over every
rollout of an iteration. Also reports what the reward alone cannot see: the decoded motion magnitude, since a
motionless video decodes to a perfectly smooth, in-limit trajectory and scores the maximum.
"""

from __future__ import annotations

import numpy as np
import torch

from eva_runtime.idm.smoothing import moving_average
from eva_runtime.idm.windows import resize_video
from eva_runtime.reward import RewardConfig
from eva_runtime.reward.torch_reward import executability_torch
from eva_runtime.world_model.wan.latents import decode_latents

__all__ = ["IdmReward"]


class IdmReward:
    def __init__(self, vae, decoder, config: RewardConfig, history_frames: int = 1, smooth: int = 3) -> None:
        self.vae, self.decoder, self.config = vae, decoder, config
        self.history_frames, self.smooth = history_frames, smooth
        self.last_frames: np.ndarray | None = None
        self.last_actions: np.ndarray | None = None

    def actions(self, frames: np.ndarray) -> np.ndarray:
        """(B, T, H, W, 3) uint8 -> (B, T, J) smoothed decoded actions."""
        size = self.decoder.config.image_size
        camera = self.decoder.config.cameras[0]
        resized = np.stack([resize_video(video, size) for video in frames])
        decoded = self.decoder.decode_batch({camera: resized})
        return np.stack([moving_average(a, self.smooth) for a in decoded])

    def for_conditions(self, conditions, group: int) -> IdmReward:
        """The same reward for any batch: executability does not depend on where a rollout starts."""
        return self

    def __call__(self, latents: torch.Tensor) -> tuple[torch.Tensor, dict]:
        frames = decode_latents(self.vae, latents)[:, self.history_frames - 1 :]
        actions = self.actions(frames)
        self.last_frames, self.last_actions = frames, actions
        parts = executability_torch(torch.from_numpy(actions).double(), self.config)
        rewards = torch.nan_to_num(parts["reward"].float(), nan=0.0)
        terms = ("p_jerk", "p_acc", "p_vel", "p_alim")
        stats = {f"penalty_{name}": float(torch.nanmean(parts[name])) for name in terms}
        stats["plausible_fraction"] = float(parts["kinematically_plausible"].float().mean())
        stats["motion_rad"] = float(np.mean(np.abs(actions[:, -1] - actions[:, 0])))
        return rewards, stats
