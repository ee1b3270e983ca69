"""The executability reward of what the robot was actually commanded, not only of the plans it was given.

The planner scores each plan's decoded actions before execution. The filtered commands that reach the arms
differ from them: the executor's curve, the junctions, the filter's clamps. `ExecutedScorer` takes the filtered
command of every tick of nominal autonomous motion and samples it at the reward's rate (one tick in `stride`,
`stride` = control rate / IDM fps). Every `horizon` samples of uninterrupted nominal motion become one window,
scored with the same reward as a plan, so the two numbers compare directly. A hold, teleop or homing tick ends
the window in progress; a partial window is not scored.
"""

from __future__ import annotations

import numpy as np

from eva_runtime.reward import RewardConfig, executability

__all__ = ["ExecutedScorer"]


class ExecutedScorer:
    def __init__(self, reward: RewardConfig, control_rate_hz: float, horizon: int) -> None:
        stride = control_rate_hz * reward.dt
        if horizon < 2 or abs(stride - round(stride)) > 1e-6 or round(stride) < 1:
            raise ValueError(
                f"executed-motion windows need horizon >= 2 and a control rate that is a whole multiple of the "
                f"reward's rate; got horizon {horizon}, {control_rate_hz} Hz and dt {reward.dt} s"
            )
        self.reward = reward
        self.stride = round(stride)
        self.horizon = horizon
        self.scores: list[float] = []
        self._samples: list[np.ndarray] = []
        self._ticks = 0

    def add(self, command: np.ndarray | None) -> None:
        """One tick: the filtered command while executing a plan in AUTONOMOUS, None on any other tick."""
        if command is None or not np.all(np.isfinite(command)):
            self._samples, self._ticks = [], 0
            return
        if self._ticks % self.stride == 0:
            self._samples.append(np.array(command, dtype=np.float64))
        self._ticks += 1
        if len(self._samples) == self.horizon:
            self.scores.append(executability(np.stack(self._samples), self.reward).reward)
            self._samples, self._ticks = [], 0
