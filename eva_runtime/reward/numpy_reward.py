"""The executability reward in NumPy (no torch): one rollout or a batch of decoded action sequences.

This is the reference implementation of the formula documented in :mod:`eva_runtime.reward.config`; the torch
version (:mod:`eva_runtime.reward.torch_reward`) computes the same numbers batched and differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eva_runtime.reward.config import RewardConfig

__all__ = [
    "FIELDS",
    "RewardBreakdown",
    "check_actions",
    "checked_batch",
    "executability",
    "executability_batch",
    "huber",
    "penalty_terms_by_dimension",
    "reward_from_penalty",
]

FIELDS = (
    "reward",
    "penalty",
    "p_jerk",
    "p_acc",
    "p_vel",
    "p_alim",
    "velocity_violation_fraction",
    "kinematically_plausible",
)


@dataclass(frozen=True)
class RewardBreakdown:
    """Reward of one rollout with its parts.

    ``kinematically_plausible`` is the paper's metric: no velocity or acceleration cap is exceeded anywhere.
    For a rollout shorter than ``min_steps`` the reward is 0, the penalty terms are NaN (not assessable) and it
    is not counted as plausible.
    """

    reward: float
    penalty: float
    p_jerk: float
    p_acc: float
    p_vel: float
    p_alim: float
    velocity_violation_fraction: float
    kinematically_plausible: bool


def huber(x: np.ndarray, delta: np.ndarray | float) -> np.ndarray:
    """Elementwise Huber: 0.5 x^2 for |x| <= delta, delta (|x| - delta / 2) beyond."""
    magnitude = np.abs(x)
    # min(|x|, delta) * (|x| - min/2) equals both branches, with no mask and no branch.
    clipped = np.minimum(magnitude, delta)
    return clipped * (magnitude - 0.5 * clipped)


def check_actions(shape: tuple[int, ...], config: RewardConfig, batched: bool) -> None:
    want = "(G, T, D)" if batched else "(T, D)"
    if len(shape) != (3 if batched else 2) or shape[-1] != config.dims:
        raise ValueError(f"actions: expected shape {want} with D = {config.dims}, got {shape}")


def executability_batch(actions: np.ndarray, config: RewardConfig) -> dict[str, np.ndarray]:
    """Reward parts of G rollouts ``actions`` (G, T, D): a dict keyed by :data:`FIELDS`, each of shape (G,)."""
    actions = checked_batch(actions, config)
    groups, steps = actions.shape[:2]
    if steps < config.min_steps:
        nan = np.full(groups, np.nan)
        out = {name: nan.copy() for name in FIELDS}
        out["reward"] = np.zeros(groups)
        out["kinematically_plausible"] = np.zeros(groups, dtype=bool)
        return out
    terms, over_velocity, over_acceleration = penalty_terms_by_dimension(actions, config)
    p_jerk, p_acc, p_vel, p_alim = (terms[name].sum(axis=1) for name in ("p_jerk", "p_acc", "p_vel", "p_alim"))
    penalty = config.w_jerk * p_jerk + config.w_acc * p_acc + config.w_vel * p_vel + config.w_alim * p_alim
    return {
        "reward": reward_from_penalty(penalty, config),
        "penalty": penalty,
        "p_jerk": p_jerk,
        "p_acc": p_acc,
        "p_vel": p_vel,
        "p_alim": p_alim,
        "velocity_violation_fraction": (over_velocity > 0).mean(axis=(1, 2)),
        "kinematically_plausible": ~((over_velocity > 0).any(axis=(1, 2)) | (over_acceleration > 0).any(axis=(1, 2))),
    }


def checked_batch(actions: np.ndarray, config: RewardConfig) -> np.ndarray:
    """``actions`` (G, T, D) as float64 after the checks every scoring of a batch makes (shape, finite)."""
    actions = np.asarray(actions, dtype=np.float64)
    check_actions(actions.shape, config, batched=True)
    if not np.all(np.isfinite(actions)):
        raise ValueError("actions: contains NaN or infinite values (a decoder failure, not a motion to score)")
    return actions


def penalty_terms_by_dimension(
    actions: np.ndarray, config: RewardConfig
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Each penalty term's share per dimension, (G, D) arrays keyed p_jerk / p_acc / p_vel / p_alim, whose sum
    over D is the term itself; with the velocity and acceleration cap excesses (G, T-1, D), (G, T-2, D).

    Finite actions of at least ``config.min_steps`` steps (executability_batch checks)."""
    scaled = actions * config.gripper_scale
    velocity = np.diff(scaled, axis=1) / config.dt
    acceleration = np.diff(velocity, axis=1) / config.dt
    jerk = np.diff(acceleration, axis=1) / config.dt
    weights = config.dimension_weights / config.dims

    def weighted_share(values: np.ndarray) -> np.ndarray:  # the (time, dimension) weighted mean, split by dimension
        return values.mean(axis=1) * weights

    over_velocity = np.maximum(np.abs(velocity) - config.velocity_max, 0.0)
    over_acceleration = np.maximum(np.abs(acceleration) - config.acceleration_max, 0.0)
    terms = {
        "p_jerk": weighted_share(huber(jerk, config.delta_j)),
        "p_acc": weighted_share(huber(acceleration, config.delta_a)),
        "p_vel": weighted_share(over_velocity**2),
        "p_alim": weighted_share(over_acceleration**2),
    }
    return terms, over_velocity, over_acceleration


def reward_from_penalty(penalty: np.ndarray, config: RewardConfig) -> np.ndarray:
    """Map penalties to rewards with the configured form (``authors`` or ``paper``)."""
    penalty = np.asarray(penalty, dtype=np.float64)
    if config.form == "authors":
        return config.scale * (1.0 + penalty / config.p0) ** (-config.gamma)
    return ((1.0 + penalty) / config.p0) ** (-config.gamma)


def executability(actions: np.ndarray, config: RewardConfig) -> RewardBreakdown:
    """Reward of one rollout ``actions`` (T, D) with its parts."""
    actions = np.asarray(actions, dtype=np.float64)
    check_actions(actions.shape, config, batched=False)
    parts = executability_batch(actions[None], config)
    values = {name: float(parts[name][0]) for name in FIELDS if name != "kinematically_plausible"}
    return RewardBreakdown(**values, kinematically_plausible=bool(parts["kinematically_plausible"][0]))
