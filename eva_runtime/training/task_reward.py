"""The task-aware alignment reward: the IDM's executability plus the task progress of the decoded plan.

    reward = executability (idm_reward.py) + weight * progress (task_progress.py)

Executability alone has little left to give a model whose decoded motion is already as smooth as the recordings'
(docs/world_model.md, "the first alignment of this model"); progress rewards the imagined motion that, decoded and
played on the simulated arms from the condition's recorded start, gets the task further. Both are computed from
the same decoded actions, the planner's. Conditions without a simulated origin (recorded on a real robot) get no
progress term, so a group keeps a common scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from eva_runtime.training.flow_grpo import Condition
from eva_runtime.training.idm_reward import IdmReward
from eva_runtime.training.task_progress import TaskProgress
from eva_runtime.world_model.oracle import OracleState

__all__ = ["TaskAwareReward"]


class TaskAwareReward:
    def __init__(self, idm_reward: IdmReward, progress: TaskProgress, fps: float, weight: float) -> None:
        if weight < 0:
            raise ValueError(f"the task-progress weight must be >= 0, got {weight}")
        self.idm_reward, self.progress, self.fps, self.weight = idm_reward, progress, fps, weight

    @property
    def last_frames(self) -> np.ndarray | None:
        return self.idm_reward.last_frames

    @property
    def last_actions(self) -> np.ndarray | None:
        return self.idm_reward.last_actions

    def __call__(self, latents: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Without conditions there is no start state: the executability alone."""
        return self.idm_reward(latents)

    def for_conditions(
        self, conditions: Sequence[Condition], group: int
    ) -> Callable[[torch.Tensor], tuple[torch.Tensor, dict]]:
        """The reward of a batch laid out as `group` rollouts of each condition in turn (align._batch's order)."""

        def reward(latents: torch.Tensor) -> tuple[torch.Tensor, dict]:
            rewards, stats = self.idm_reward(latents)
            actions = self.idm_reward.last_actions
            if len(actions) != len(conditions) * group:
                raise ValueError(f"{len(actions)} rollouts for {len(conditions)} conditions of {group}")
            played = [self._play(conditions[index // group], plan) for index, plan in enumerate(actions)]
            progress = torch.tensor([p.progress if p else 0.0 for p in played], dtype=rewards.dtype)
            stats.update(_progress_stats([p for p in played if p is not None], progress, group))
            captured = torch.tensor([isinstance(c.origin, OracleState) for c in conditions]).repeat_interleave(group)
            if captured.any():  # the two sources apart: the closed loop's states are where the task is lost
                stats["task_progress_closed_loop"] = float(progress[captured].mean())
                if not captured.all():
                    stats["task_progress_recorded"] = float(progress[~captured].mean())
            return rewards + self.weight * progress, stats

        return reward

    def _play(self, condition: Condition, actions: np.ndarray):
        origin = condition.origin
        if origin is None or not np.all(np.isfinite(actions)):
            return None
        if isinstance(origin, OracleState):  # captured in closed loop: the state itself, nothing to replay
            start = origin
        else:
            start = self.progress.start_state(origin.seed, origin.step, origin.command)
        return self.progress.play(start, actions, self.fps)


def _progress_stats(played: list, progress: torch.Tensor, group: int) -> dict:
    if not played:
        return {}
    spread = progress.reshape(-1, group).std(dim=1, unbiased=False).mean()
    return {
        "task_progress": float(progress.mean()),
        "task_progress_group_std": float(spread),
        "task_final_stage": float(np.mean([p.final for p in played])),
        "task_furthest_held": float(np.mean([p.furthest_held for p in played])),
        "task_closest_reach_m": float(np.median([p.closest_reach_m for p in played])),
    }
