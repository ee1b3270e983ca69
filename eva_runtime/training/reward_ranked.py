"""Reward-ranked fine-tuning (RAFT, Dong et al. 2023), the alignment `eva train align` runs when its config has a
`ranked` section: per condition, G deterministic (ODE) rollouts of the current model, as the runtime samples them;
the best `keep` by the same reward Flow-GRPO uses are kept when the group's rewards spread enough to rank; and
the LoRA adapter takes `updates` flow-matching steps (the SFT loss) on the kept rollouts as if they were
demonstrations, the observed frames clean in front as in SFT; with `anchor`, the conditions' recorded futures
are trained on beside them (SFT replay).

Why beside Flow-GRPO: on this machine an alignment run affords ~1,300 rollouts, and a policy gradient over a few
SDE steps learned executability from them but not task progress (docs/world_model.md). Ranking needs no
log-probabilities, no SDE and no ratio clipping: the signal is which rollout went furthest, and the update is the
low-variance supervised loss the model was trained with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from eva_runtime.training.update_batch import RolloutBatch, Trainee
from eva_runtime.training.wm_sft import flow_matching_loss
from eva_runtime.world_model.wan.sampling import Denoiser, euler_sample

__all__ = ["RankedSettings", "best_of_groups", "ranked_iteration"]


@dataclass(frozen=True)
class RankedSettings:
    keep: int = 1  # best rollouts per group trained on
    updates: int = 2  # optimiser steps per iteration on the kept rollouts
    min_spread: float = 0.0  # a group whose best and worst rewards differ by no more is not ranked
    shift: float = 1.0  # the scheduler's timestep shift, as in SFT
    max_grad_norm: float = 1.0


def best_of_groups(rewards: torch.Tensor, keys: Sequence[str], keep: int, min_spread: float = 0.0) -> list[int]:
    """Indices of the `keep` highest rewards of each group (by key, in first-seen order), best first; a group whose
    reward range is not above `min_spread` contributes none (it has nothing to rank)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if len(rewards) != len(keys):
        raise ValueError(f"{len(rewards)} rewards for {len(keys)} keys")
    values = rewards.detach().double().cpu().numpy()  # float64: the spread compared with min_spread exactly
    if not np.all(np.isfinite(values)):
        raise ValueError("rewards contain NaN or infinite values: nothing to rank")
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    picks: list[int] = []
    for members in groups.values():
        group = values[members]
        if float(group.max() - group.min()) <= min_spread:
            continue
        order = np.argsort(-group, kind="stable")[:keep]
        picks += [members[i] for i in order]
    return picks


def ranked_iteration(
    trainee: Trainee,
    batch: RolloutBatch,
    reward_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict]],
    settings: RankedSettings,
    anchor: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[dict, torch.Tensor]:
    """Sample, rank, and fine-tune on the best; returns telemetry and the sampled latents (B, z, t, h, w).

    `anchor`: clean latents of recorded clips and their prompt embeddings, trained on beside the kept rollouts in
    every update (SFT replay, which keeps the frames as sharp as the data's). The batch's generator draws the
    training times and noise (required here)."""
    if batch.generator is None:
        raise ValueError("ranked_iteration needs the batch's generator (it draws the fine-tuning noise)")
    unwrapped, embeds, conditioned = trainee.unwrapped, batch.prompt_embeds, batch.conditioned
    unwrapped.eval()
    with torch.no_grad():
        denoiser = Denoiser(unwrapped, embeds, batch.condition_latents, conditioned)
        final = euler_sample(denoiser, batch.noise, batch.sigmas)
    rewards, reward_stats = reward_fn(final)
    picks = best_of_groups(rewards, batch.keys, settings.keep, settings.min_spread)
    telemetry: dict = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std(unbiased=False))}
    telemetry.update(reward_stats)
    groups = len(set(batch.keys))
    telemetry["ranked_group_fraction"] = len(picks) / (settings.keep * groups)
    if not picks:
        return telemetry, final
    telemetry["kept_reward_mean"] = float(rewards[picks].mean())
    kept, texts = final[picks].detach(), embeds[picks]
    if anchor is not None:
        kept, texts = torch.cat([kept, anchor[0].to(kept.dtype)]), torch.cat([texts, anchor[1].to(texts.dtype)])
        telemetry["anchored"] = len(anchor[0])
    unwrapped.train()
    losses = []
    for _ in range(settings.updates):
        trainee.optimizer.zero_grad(set_to_none=True)
        loss = flow_matching_loss(trainee.model, kept, texts, conditioned, batch.generator, settings.shift)
        trainee.backward(loss)
        trainee.step(settings.max_grad_norm)
        losses.append(loss.item())
    unwrapped.eval()
    telemetry["loss"] = float(np.mean(losses))
    return telemetry, final
