"""The EVA executability reward on decoded actions (NumPy core; torch version in ``reward.torch_reward``).

Importing this package never imports torch: runtime installs have none. Use
``from eva_runtime.reward.torch_reward import executability_torch`` on a training install.
"""

from eva_runtime.reward.config import FORMS, RewardConfig
from eva_runtime.reward.numpy_reward import (
    FIELDS,
    RewardBreakdown,
    executability,
    executability_batch,
    huber,
    reward_from_penalty,
)

__all__ = [
    "FIELDS",
    "FORMS",
    "RewardBreakdown",
    "RewardConfig",
    "executability",
    "executability_batch",
    "huber",
    "reward_from_penalty",
]
