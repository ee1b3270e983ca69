"""Where decoded plans lose their executability, and how much they move: the reward's penalty split between the
arms' joints and the grippers, and each group's travel, per plan; summarised with 95 % intervals, and two sets
of plans of the same conditions compared plan by plan.

It answers questions such as "do aligned plans score higher because they stop closing the gripper?": the
gripper's share of the penalty and its travel (in the reward's 0-1 opening units) fall together if so.
"""

from __future__ import annotations

import numpy as np

from eva_runtime.records.success_rate import mean_interval
from eva_runtime.reward.config import RewardConfig
from eva_runtime.reward.numpy_reward import checked_batch, penalty_terms_by_dimension, reward_from_penalty

__all__ = ["PLAN_FIELDS", "paired_plan_differences", "plan_breakdown", "summarise_plans"]

PLAN_FIELDS = (
    "reward",
    "penalty",
    "penalty_joints",
    "penalty_grippers",
    "gripper_share",
    "jerk_grippers",
    "travel_joints_rad",
    "travel_grippers",
    "gripper_span",
)


def plan_breakdown(actions: np.ndarray, config: RewardConfig) -> dict[str, np.ndarray]:
    """Per-plan fields of :data:`PLAN_FIELDS` for decoded plans ``actions`` (N, T, D), each of shape (N,).

    ``penalty_joints + penalty_grippers == penalty``; ``gripper_share`` is the grippers' fraction of it (0 for a
    motionless plan); ``jerk_grippers`` is their weighted jerk term (before ``w_jerk``); travel is the summed
    absolute step per dimension, averaged over the group's dimensions (rad on joints, opening units on grippers);
    ``gripper_span`` is the widest open-close range of any gripper within the plan."""
    actions = checked_batch(actions, config)
    if actions.shape[1] < config.min_steps:
        raise ValueError(f"plans of {actions.shape[1]} steps are too short to score (need {config.min_steps})")
    terms, _, _ = penalty_terms_by_dimension(actions, config)  # the reward's own terms, split per dimension
    weights = {"p_jerk": config.w_jerk, "p_acc": config.w_acc, "p_vel": config.w_vel, "p_alim": config.w_alim}
    by_dimension = sum(weight * terms[name] for name, weight in weights.items())
    grippers = np.isin(np.arange(config.dims), config.gripper_indices)
    penalty_grippers = by_dimension[:, grippers].sum(axis=1)
    penalty = by_dimension.sum(axis=1)
    scaled = actions * config.gripper_scale
    travel = np.abs(np.diff(scaled, axis=1)).sum(axis=1)
    span = np.ptp(scaled[:, :, grippers], axis=1) if grippers.any() else np.zeros((len(actions), 1))
    return {
        "reward": reward_from_penalty(penalty, config),
        "penalty": penalty,
        "penalty_joints": by_dimension[:, ~grippers].sum(axis=1),
        "penalty_grippers": penalty_grippers,
        "gripper_share": np.divide(penalty_grippers, penalty, out=np.zeros_like(penalty), where=penalty > 0),
        "jerk_grippers": terms["p_jerk"][:, grippers].sum(axis=1),
        "travel_joints_rad": travel[:, ~grippers].mean(axis=1),
        "travel_grippers": travel[:, grippers].mean(axis=1) if grippers.any() else np.zeros(len(actions)),
        "gripper_span": span.max(axis=1),
    }


def summarise_plans(per_plan: dict[str, np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """Each field's (mean, low, high) over the plans."""
    return {name: mean_interval(values) for name, values in per_plan.items()}


def paired_plan_differences(
    first: dict[str, np.ndarray], second: dict[str, np.ndarray]
) -> dict[str, tuple[float, float, float]]:
    """Each field's mean plan-by-plan difference (second - first) with its 95 % interval: the two sets must be
    the same conditions and sample order (the same `eva eval world-model` starts, samples and seed)."""
    lengths = {len(first["reward"]), len(second["reward"])}
    if len(lengths) != 1:
        raise ValueError(f"paired plans need as many plans in both sets, got {sorted(lengths)}")
    return {name: mean_interval(second[name] - first[name]) for name in first}
