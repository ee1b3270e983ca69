"""Flow-GRPO on the Wan transformer: group-normalised advantages, the clipped ratio objective per denoising step
with a KL to the reference (the same network with its LoRA adapters disabled), and one iteration of it.

The pieces are pure functions of tensors so that each can be tested alone (ratio 1 without an update, advantages
per group, the reference equal to the base); `grpo_iteration` strings them together for a batch of conditions:
sample G rollouts per condition with the SDE sampler (current policy, no grad), score them, normalise the rewards
within each condition's group (keyed by the conditioning frames' bytes and the instruction, not the text alone),
then for each trained step recompute the log-probability of the recorded transition under the current
parameters and accumulate the loss's gradient over steps before one optimiser step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from eva_runtime.training.sde import NoiseSchedule, RecordedRollout, sample_with_logprob, sde_step_with_logprob, step_kl
from eva_runtime.training.update_batch import RolloutBatch, Trainee
from eva_runtime.world_model.wan.sampling import Denoiser

__all__ = [
    "Condition",
    "ConditionOrigin",
    "GrpoSettings",
    "condition_key",
    "group_advantages",
    "grpo_iteration",
    "policy_loss",
    "trained_steps",
]


@dataclass(frozen=True)
class ConditionOrigin:
    """Where a condition was recorded in simulation: enough to regenerate its start state (`task_progress.py`)."""

    seed: int  # the expert episode's seed
    step: int  # control step of the last observed frame
    command: np.ndarray  # (dof,) the command the recording applied at that step, to check the replay against


@dataclass(frozen=True)
class Condition:
    frames: np.ndarray  # (K, H, W, 3) uint8 observed frames, oldest first
    instruction: str
    truth: np.ndarray | None = None  # (horizon, H, W, 3) the recorded future, for the held-out guard
    # None: not from a simulated recording (no task-progress reward). An oracle.OracleState for a condition
    # captured in closed loop (align_data.py): played from that state, not replayed.
    origin: ConditionOrigin | Any | None = None

    @property
    def key(self) -> str:
        return condition_key(self.frames, self.instruction)


def condition_key(frames: np.ndarray, instruction: str) -> str:
    """The group key: SHA-256 over the conditioning frames (shape and bytes) and the instruction."""
    digest = hashlib.sha256()
    frames = np.ascontiguousarray(frames)
    digest.update(repr((frames.shape, str(frames.dtype))).encode())
    digest.update(frames.tobytes())
    digest.update(b"\x00" + instruction.encode())
    return digest.hexdigest()


def group_advantages(rewards: torch.Tensor, keys: Sequence[str], clip: float = 5.0, eps: float = 1e-6):
    """(R - mean_group) / (std_group + eps), clamped to +-clip; also the fraction of groups with zero spread."""
    rewards = rewards.float()
    advantages = torch.zeros_like(rewards)
    flat = 0
    groups = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    for members in groups.values():
        values = rewards[members]
        spread = values.std(unbiased=False)
        flat += bool(spread <= eps)
        advantages[members] = (values - values.mean()) / (spread + eps)
    return advantages.clamp(-clip, clip), flat / len(groups)


def policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float):
    """The clipped ratio objective (to minimise) and its statistics for one step."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        log_ratio = log_prob - old_log_prob
        stats = {
            "clip_fraction": float(((ratio - 1.0).abs() > clip_range).float().mean()),
            "approx_kl": float(((ratio - 1.0) - log_ratio).mean()),
            "ratio_mean": float(ratio.mean()),
            "ratio_min": float(ratio.min()),
            "ratio_max": float(ratio.max()),
        }
    return loss, stats


def trained_steps(rollout: RecordedRollout, train_last_step: bool) -> list[int]:
    """The stochastic steps in order; the last (least noisy) one dropped unless asked for."""
    steps = [i for i, stochastic in enumerate(rollout.stochastic) if stochastic]
    last = len(rollout.stochastic) - 1
    return [i for i in steps if train_last_step or i != last]


@dataclass(frozen=True)
class GrpoSettings:
    clip_range: float = 1e-4
    kl_beta: float = 0.004
    advantage_clip: float = 5.0
    inner_epochs: int = 1
    train_last_step: bool = False
    max_grad_norm: float = 1.0


def _set_adapters(model, enabled: bool) -> None:
    if enabled:
        model.enable_adapters()
    else:
        model.disable_adapters()


def grpo_iteration(
    trainee: Trainee,
    batch: RolloutBatch,
    schedule: NoiseSchedule,
    reward_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict]],
    settings: GrpoSettings,
    stochastic_steps: set[int] | None = None,
) -> tuple[dict, RecordedRollout]:
    """One GRPO update on a batch of B = sum of group sizes rollouts; returns telemetry and the rollouts."""
    model, unwrapped, sigmas = trainee.model, trainee.unwrapped, batch.sigmas
    conditioning = _Conditioning(batch.prompt_embeds, batch.condition_latents, batch.conditioned)
    unwrapped.eval()
    sampler = conditioning.denoiser(unwrapped)
    rollout = sample_with_logprob(sampler, batch.noise, sigmas, schedule, stochastic_steps, batch.generator)
    rewards, reward_stats = reward_fn(rollout.final)
    advantages, flat_groups = group_advantages(rewards, batch.keys, settings.advantage_clip)
    steps = trained_steps(rollout, settings.train_last_step)
    mask = sampler.mask(rollout.final)
    telemetry: dict = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std(unbiased=False))}
    telemetry["flat_group_fraction"] = flat_groups
    telemetry.update(reward_stats)
    collected: dict[str, list[float]] = {}
    for _epoch in range(settings.inner_epochs):
        trainee.optimizer.zero_grad(set_to_none=True)
        for index in steps:
            loss, stats = _step_loss(
                model, unwrapped, conditioning, rollout, index, sigmas, schedule, mask, advantages, settings
            )
            stats["loss"] = loss.item()
            # Gradients accumulate over the trained steps; one optimiser step per epoch.
            trainee.backward(loss / len(steps))
            for name, value in stats.items():
                collected.setdefault(name, []).append(value)
        trainee.step(settings.max_grad_norm)
    for name, values in collected.items():
        reducer = {"ratio_min": min, "ratio_max": max}.get(name)
        telemetry[name] = float(reducer(values)) if reducer else float(np.mean(values))
    telemetry["trained_steps"] = len(steps)
    return telemetry, rollout


@dataclass(frozen=True)
class _Conditioning:
    """What every denoiser of one batch is conditioned on: text embeddings and the clean conditioning latents."""

    prompt_embeds: torch.Tensor
    latents: torch.Tensor
    conditioned: int

    def denoiser(self, transformer) -> Denoiser:
        return Denoiser(transformer, self.prompt_embeds, self.latents, self.conditioned)


def _step_loss(
    model,
    unwrapped,
    conditioning: _Conditioning,
    rollout: RecordedRollout,
    index: int,
    sigmas: torch.Tensor,
    schedule: NoiseSchedule,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    settings: GrpoSettings,
) -> tuple[torch.Tensor, dict]:
    """The clipped objective of one recorded transition under the current parameters, plus the KL term if asked."""
    log_prob, mean, std = _recorded_step(model, conditioning, rollout, index, sigmas, schedule, mask)
    loss, stats = policy_loss(log_prob, rollout.log_probs[:, index], advantages, settings.clip_range)
    if settings.kl_beta > 0:
        reference_mean = _reference_mean(unwrapped, conditioning, rollout, index, sigmas, schedule)
        kl = step_kl(mean, reference_mean, std, mask).mean()
        loss = loss + settings.kl_beta * kl
        stats["kl"] = kl.item()
    return loss, stats


def _reference_mean(
    unwrapped,
    conditioning: _Conditioning,
    rollout: RecordedRollout,
    index: int,
    sigmas: torch.Tensor,
    schedule: NoiseSchedule,
) -> torch.Tensor:
    """The step's mean under the reference (the same network with its adapters off), without gradient."""
    with torch.no_grad():
        _set_adapters(unwrapped, False)
        try:
            _, reference_mean, _ = _recorded_step(unwrapped, conditioning, rollout, index, sigmas, schedule)
        finally:
            _set_adapters(unwrapped, True)
    return reference_mean


def _recorded_step(
    transformer,
    conditioning: _Conditioning,
    rollout: RecordedRollout,
    index: int,
    sigmas: torch.Tensor,
    schedule: NoiseSchedule,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log_prob, mean, std) of the recorded step ``index`` -> ``index + 1`` under ``transformer``'s velocity."""
    sigma, following = float(sigmas[index]), float(sigmas[index + 1])
    velocity = conditioning.denoiser(transformer).velocity(rollout.latents[index], sigmas[index])
    _, log_prob, mean, std = sde_step_with_logprob(
        velocity, sigma, following, rollout.latents[index], schedule, rollout.latents[index + 1], mask=mask
    )
    return log_prob, mean, std
