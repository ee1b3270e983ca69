"""What one alignment update works on, shared by Flow-GRPO (`flow_grpo.grpo_iteration`) and reward-ranked
fine-tuning (`reward_ranked.ranked_iteration`): the trained network with its optimiser (`Trainee`) and one
iteration's batch of conditions to sample rollouts from (`RolloutBatch`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["RolloutBatch", "Trainee"]


@dataclass(frozen=True)
class Trainee:
    """`model` is what gradients flow through (possibly a DDP wrapper), `unwrapped` the transformer itself (its
    adapters are switched off for the reference); `backward` is `accelerator.backward` or `Tensor.backward`;
    `parameters`, when given, have their gradient norm clipped before each optimiser step."""

    model: Any
    unwrapped: Any
    optimizer: Any
    backward: Callable[[torch.Tensor], None]
    parameters: Sequence[torch.nn.Parameter] = ()

    def step(self, max_grad_norm: float) -> None:
        """One optimiser step on the accumulated gradients, clipped first when there are parameters to clip."""
        if self.parameters:
            torch.nn.utils.clip_grad_norm_(self.parameters, max_grad_norm)
        self.optimizer.step()


@dataclass(frozen=True)
class RolloutBatch:
    """B rollouts to sample (a group of G per condition): the clean conditioning latents (B, z, t, h, w), whose
    first `conditioned` latent frames are observed; the prompt embeddings (B, ...); each rollout's group key; the
    starting noise; the sampler's sigmas; and the generator that draws the SDE's noise and the training times."""

    condition_latents: torch.Tensor
    prompt_embeds: torch.Tensor
    conditioned: int
    keys: Sequence[str]
    noise: torch.Tensor
    sigmas: torch.Tensor
    generator: torch.Generator | None = None
