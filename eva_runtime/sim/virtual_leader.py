"""Virtual leader arms for teleoperation in simulation, moved by a scripted operator (the task's expert).

At a takeover the operator picks up the task's script from the follower's current command and task progress,
like a person taking the leader arms over; the pose it reports is where the expert would command the follower.
It implements the `LeaderArms` protocol of `eva_runtime.control.teleop`.
"""

from __future__ import annotations

import numpy as np

from eva_runtime.robots.mujoco_robot import MujocoRobot

__all__ = ["ExpertLeader"]


class ExpertLeader:
    def __init__(self, robot: MujocoRobot) -> None:
        self.robot = robot
        self._expert = None
        self._step = 0

    def takeover(self, progress: int, command: np.ndarray) -> None:
        from eva_runtime.sim.experts import make_expert

        self._step = progress
        self._expert = make_expert(self.robot.task_name, self.robot.sim, progress, command)

    def read(self) -> tuple[float, np.ndarray] | None:
        if self._expert is None:
            return None  # nobody holds the leader arms yet
        pose = self._expert(self.robot.sim, self._step)
        self._step += 1
        return self.robot.now(), pose
