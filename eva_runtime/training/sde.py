"""The stochastic flow sampler of Flow-GRPO: one SDE denoising step with its log-probability, the per-step KL,
and a sampler that records every step of a rollout.

Flow convention x_s = (1 - s) x0 + s eps, velocity v = eps - x0, sigmas s_0 = 1 > ... > s_N = 0, dt < 0.
`sde_step_with_logprob` has the shape of the public Flow-GRPO function: it returns the next latent, the per-sample
log-probability (the Gaussian log-density averaged over latent elements, in float32), the step mean and the
step std. Two noise schedules (docs/references.md §2):
- "flow_grpo": std_t = a sqrt(s / (1 - s)) (at s = 1 the next sigma is used), with the noise-level knob a;
- "wan": std_t = s_min + (s_max - s_min) s, the variant the EVA authors used (no noise-level knob).
The mean is the SDE's drift step x + v dt + std_t^2 / (2 s) (x + (1 - s) v) dt in both; the sample is
mean + std_t sqrt(-dt) eps. With std_t = 0 the step is the deterministic Euler (ODE) step.
Only the generated latent frames count in the log-probability: the conditioning frames are written back clean
after every step and carry no randomness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["NoiseSchedule", "RecordedRollout", "sample_with_logprob", "sde_step_with_logprob", "step_kl"]


@dataclass(frozen=True)
class NoiseSchedule:
    kind: str = "flow_grpo"  # or "wan"
    noise_level: float = 0.7  # a, the Flow-GRPO knob
    sigma_min: float = 0.0  # the Wan variant's std at s = 0
    sigma_max: float = 0.5  # ... and at s = 1

    def __post_init__(self) -> None:
        if self.kind not in ("flow_grpo", "wan"):
            raise ValueError(f"noise schedule kind {self.kind!r}: use flow_grpo or wan")
        if self.noise_level < 0 or self.sigma_min < 0 or self.sigma_max < self.sigma_min:
            raise ValueError("noise levels must be >= 0 and sigma_max >= sigma_min")

    def std(self, sigma: float, sigma_next: float) -> float:
        if self.kind == "wan":
            return self.sigma_min + (self.sigma_max - self.sigma_min) * sigma
        s = sigma_next if sigma >= 1.0 else sigma  # sqrt(s / (1 - s)) is infinite at s = 1
        if s <= 0.0:
            return 0.0
        return self.noise_level * math.sqrt(s / (1.0 - s))


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over all but the batch dimension, restricted to `mask` (1 = counted) when given."""
    if mask is None:
        return values.flatten(1).mean(1)
    weights = mask.expand_as(values)
    return (values * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)


def sde_step_with_logprob(
    velocity: torch.Tensor,
    sigma: float,
    sigma_next: float,
    latents: torch.Tensor,
    schedule: NoiseSchedule,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
):
    """(prev_sample, log_prob [B], mean, std) for one step from `sigma` to `sigma_next`.

    Given `prev_sample` (a recorded next latent) it is scored instead of sampled: that is how the training
    step recomputes the log-probability of what the rollout did under the current parameters.
    """
    velocity, latents = velocity.float(), latents.float()
    dt = float(sigma_next) - float(sigma)
    std_t = schedule.std(float(sigma), float(sigma_next))
    mean = latents + velocity * dt
    if std_t > 0 and sigma > 0:
        mean = mean + std_t**2 / (2 * float(sigma)) * (latents + (1 - float(sigma)) * velocity) * dt
    std = std_t * math.sqrt(-dt)
    if prev_sample is None:
        if std > 0:
            noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device)
            prev_sample = mean + std * noise
        else:
            prev_sample = mean
    prev_sample = prev_sample.float()
    if std > 0:
        density = -((prev_sample.detach() - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
        log_prob = _masked_mean(density, mask)
    else:
        log_prob = torch.zeros(latents.shape[0], device=latents.device)
    return prev_sample, log_prob, mean, torch.tensor(std)


def step_kl(mean: torch.Tensor, mean_reference: torch.Tensor, std: torch.Tensor, mask: torch.Tensor | None = None):
    """KL(theta || reference) of one step per sample: mean((mu - mu_ref)^2) / (2 std^2)."""
    return _masked_mean((mean - mean_reference) ** 2, mask) / (2 * std.clamp_min(1e-12) ** 2)


@dataclass
class RecordedRollout:
    latents: list[torch.Tensor]  # x_0 (noise) .. x_N, N + 1 tensors [B, z, t, h, w]
    log_probs: torch.Tensor  # [B, N]: 0 where the step was deterministic
    stochastic: list[bool]  # per step: sampled with the SDE (trainable) or the ODE
    sigmas: torch.Tensor  # N + 1 values

    @property
    def final(self) -> torch.Tensor:
        return self.latents[-1]


@torch.no_grad()
def sample_with_logprob(
    denoiser,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    schedule: NoiseSchedule,
    stochastic_steps: set[int] | None = None,
    generator: torch.Generator | None = None,
) -> RecordedRollout:
    """Sample a rollout, recording every latent and the log-probability of every stochastic step.

    `denoiser` is a `sampling.Denoiser` (velocity + clean conditioning frames); `stochastic_steps=None` makes
    every step stochastic, a set makes only those (the "fast" variant's window) stochastic.
    """
    latents = denoiser.inject(noise.float())
    mask = denoiser.mask(latents)
    steps = len(sigmas) - 1
    recorded, log_probs, stochastic = [latents], [], []
    for index in range(steps):
        sigma, following = float(sigmas[index]), float(sigmas[index + 1])
        velocity = denoiser.velocity(latents, sigmas[index])
        is_sde = stochastic_steps is None or index in stochastic_steps
        step_schedule = schedule if is_sde else NoiseSchedule(noise_level=0.0)
        latents, log_prob, _, _ = sde_step_with_logprob(
            velocity, sigma, following, latents, step_schedule, generator=generator, mask=mask
        )
        latents = denoiser.inject(latents)
        recorded.append(latents)
        log_probs.append(log_prob)
        stochastic.append(is_sde)
    return RecordedRollout(recorded, torch.stack(log_probs, 1), stochastic, sigmas)
