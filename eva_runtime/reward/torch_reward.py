"""The executability reward in torch: batched over rollouts, differentiable, same formula as the NumPy version.

Computed in the input's floating dtype on the input's device; the constants of :class:`RewardConfig` are moved
there once per call. Results match :func:`eva_runtime.reward.numpy_reward.executability_batch`.
"""

from __future__ import annotations

import numpy as np
import torch

from eva_runtime.reward.config import RewardConfig
from eva_runtime.reward.numpy_reward import FIELDS, check_actions

__all__ = ["executability_torch"]


def _huber(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    magnitude = x.abs()
    clipped = torch.minimum(magnitude, delta)
    return clipped * (magnitude - 0.5 * clipped)


def _dimension_constants(config: RewardConfig, options: dict) -> tuple[torch.Tensor, ...]:
    """Gripper scale, velocity and acceleration limits, Huber deltas and dimension weights, as tensors."""
    # One host->device copy for all per-dimension constants.
    constants = np.stack(
        [
            config.gripper_scale,
            config.velocity_max,
            config.acceleration_max,
            config.delta_a,
            config.delta_j,
            config.dimension_weights,
        ]
    )
    return torch.as_tensor(constants, **options).unbind(0)


def executability_torch(actions: torch.Tensor, config: RewardConfig) -> dict[str, torch.Tensor]:
    """Reward parts of G rollouts ``actions`` (G, T, D), keyed like :data:`FIELDS`, each of shape (G,).

    ``reward`` and the penalty terms carry gradients to ``actions``; ``kinematically_plausible`` is a bool
    tensor. Rollouts shorter than ``config.min_steps`` get reward 0 and NaN terms, like the NumPy version.
    """
    check_actions(tuple(actions.shape), config, batched=True)
    if not actions.is_floating_point():
        actions = actions.to(torch.float64)
    if not bool(torch.isfinite(actions).all()):
        raise ValueError("actions: contains NaN or infinite values (a decoder failure, not a motion to score)")
    groups, steps = actions.shape[:2]
    options = {"dtype": actions.dtype, "device": actions.device}
    if steps < config.min_steps:
        nan = torch.full((groups,), float("nan"), **options)
        out = {name: nan.clone() for name in FIELDS}
        out["reward"] = torch.zeros(groups, **options)
        out["kinematically_plausible"] = torch.zeros(groups, dtype=torch.bool, device=actions.device)
        return out
    scale, v_max, a_max, delta_a, delta_j, weights = _dimension_constants(config, options)
    velocity = torch.diff(actions * scale, dim=1) / config.dt
    acceleration = torch.diff(velocity, dim=1) / config.dt
    jerk = torch.diff(acceleration, dim=1) / config.dt

    def weighted_mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weights).mean(dim=(1, 2))

    over_velocity = torch.clamp(velocity.abs() - v_max, min=0.0)
    over_acceleration = torch.clamp(acceleration.abs() - a_max, min=0.0)
    p_jerk = weighted_mean(_huber(jerk, delta_j))
    p_acc = weighted_mean(_huber(acceleration, delta_a))
    p_vel = weighted_mean(over_velocity.square())
    p_alim = weighted_mean(over_acceleration.square())
    penalty = config.w_jerk * p_jerk + config.w_acc * p_acc + config.w_vel * p_vel + config.w_alim * p_alim
    if config.form == "authors":
        reward = config.scale * (1.0 + penalty / config.p0).pow(-config.gamma)
    else:
        reward = ((1.0 + penalty) / config.p0).pow(-config.gamma)
    velocity_violated = over_velocity > 0
    acceleration_violated = (over_acceleration > 0).any(dim=(1, 2))
    return {
        "reward": reward,
        "penalty": penalty,
        "p_jerk": p_jerk,
        "p_acc": p_acc,
        "p_vel": p_vel,
        "p_alim": p_alim,
        "velocity_violation_fraction": velocity_violated.to(actions.dtype).mean(dim=(1, 2)),
        "kinematically_plausible": ~(velocity_violated.any(dim=(1, 2)) | acceleration_violated),
    }
