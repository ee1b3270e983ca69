"""IDM replay: decode recorded ground-truth videos with the exported IDM and execute the actions in simulation.

The method's own validity check (the EVA paper reports 89.52 % on RoboTwin): if an IDM cannot reproduce a task
from the true video, no world model can make it succeed. Each held-out episode is reset from its recorded seed;
its video, at the IDM's fps, is decoded in one batched call; the actions are interpolated linearly to the
control rate and executed through the safety filter by the same harness as every other policy. Decoded actions
may first be smoothed over a few frames (`smooth`, a centred moving average), which removes the per-frame
decoding jitter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eva_runtime.idm.dataset import frame_step
from eva_runtime.idm.decoder import IdmDecoder
from eva_runtime.idm.smoothing import moving_average
from eva_runtime.idm.windows import resize_video
from eva_runtime.records.hdf5_episodes import read_episode
from eva_runtime.robots.interface import Observation
from eva_runtime.robots.mujoco_robot import MujocoRobot
from eva_runtime.sim.evaluation import EpisodeResult, run_episode

__all__ = ["ReplayPolicy", "decode_episode", "replay_episode"]


class ReplayPolicy:
    """Plays a fixed action sequence (at `fps`) by linear interpolation at the robot's control rate."""

    needs_cameras = False

    def __init__(self, actions: np.ndarray, fps: float, control_rate_hz: float) -> None:
        self.actions = actions
        self.per_action = control_rate_hz / fps
        self._step = 0

    def reset(self, robot: MujocoRobot, seed: int) -> None:
        self._step = 0

    def act(self, observation: Observation) -> np.ndarray:
        position = self._step / self.per_action
        self._step += 1
        low = min(int(position), len(self.actions) - 1)
        high = min(low + 1, len(self.actions) - 1)
        fraction = position - low if high > low else 0.0
        return (1 - fraction) * self.actions[low] + fraction * self.actions[high]


def decode_episode(decoder: IdmDecoder, path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(decoded actions, recorded actions at the IDM fps, seed) of one recorded episode."""
    episode = read_episode(path)
    step = frame_step(episode.fps, decoder.fps, path)
    frames = {c: resize_video(episode.images[c][::step], decoder.config.image_size) for c in decoder.config.cameras}
    if episode.seed is None:
        raise ValueError(f"{path}: no seed recorded; the scene cannot be reset to replay it")
    return decoder.decode(frames), episode.action[::step], episode.seed


def replay_episode(
    robot: MujocoRobot, decoder: IdmDecoder, path: Path, max_steps: int, smooth: int = 1
) -> tuple[EpisodeResult, float]:
    """Replay one episode; returns the result and the mean absolute decoding error on the arm joints."""
    decoded, recorded, seed = decode_episode(decoder, path)
    decoded = moving_average(decoded, smooth)
    arm = np.ones(decoded.shape[1], dtype=bool)
    arm[list(decoder.config.gripper_indices)] = False
    error = float(np.abs(decoded - recorded)[:, arm].mean())
    policy = ReplayPolicy(decoded, decoder.fps, robot.embodiment.control_rate_hz)
    return run_episode(robot, policy, seed, max_steps), error
