"""Demonstration recording: scripted-expert episodes in the simulation, written as vendor-layout HDF5 files.

Each episode runs the expert through the safety filter exactly as evaluation does. Recorded per frame: the
three cameras at the embodiment's size, the measured joints (`qpos`, `qvel`, and `effort`: the simulated
actuator forces) and the command actually sent (`action`, what the leader arms would command on the real robot).
Files are marked `sim`, which tells ACT-style loaders to pair each action with its own frame. Frames are kept
every `control_rate / fps` control steps; episode i uses seed `first_seed + i`, so the same command regenerates
the same data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.atomic_file import write_text_atomically
from eva_runtime.records.hdf5_episodes import Episode, episode_path, write_episode
from eva_runtime.robots.interface import Observation
from eva_runtime.robots.mujoco_robot import MujocoRobot
from eva_runtime.sim.bimanual_sim import steps_per_frame
from eva_runtime.sim.evaluation import EpisodeResult, ExpertPolicy, run_episode
from eva_runtime.sim.expert_variation import ExpertVariation

__all__ = ["RecordedEpisode", "record_demonstrations"]


@dataclass(frozen=True)
class RecordedEpisode:
    path: Path | None  # None: not written (a failed episode when only successful ones are kept)
    result: EpisodeResult
    frames: int


class _EpisodeBuffer:
    """Collects every `stride`-th tick of one episode."""

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.images: dict[str, list[np.ndarray]] = {}
        self.qpos: list[np.ndarray] = []
        self.qvel: list[np.ndarray] = []
        self.effort: list[np.ndarray] = []
        self.action: list[np.ndarray] = []

    def keep(self, step: int, observation: Observation, applied: np.ndarray) -> None:
        if step % self.stride:
            return
        for name, frame in observation.frames.items():
            self.images.setdefault(name, []).append(frame.image)
        self.qpos.append(observation.joint_position)
        self.qvel.append(observation.joint_velocity)
        self.effort.append(observation.joint_effort)
        self.action.append(applied)


def record_demonstrations(
    robot: MujocoRobot,
    episodes: int,
    out_dir: Path,
    fps: float = 25.0,
    first_seed: int = 0,
    max_steps: int | None = None,
    compression: str | None = "gzip",
    on_episode: Callable[[RecordedEpisode], None] | None = None,
    variation: ExpertVariation | None = None,
    successful_only: bool = False,
) -> list[RecordedEpisode]:
    """`variation`: varied demonstrations (`sim/expert_variation.py`). `successful_only`: an episode the expert
    failed is reported to `on_episode` but not written (the files stay numbered without gaps; each carries its
    seed). Either writes `variation.json` beside the episodes: the variation and the seeds left out, so a reader
    of the directory knows which seeds it holds."""
    from eva_runtime.sim.tasks import task_spec

    spec = task_spec(robot.task_name)
    stride = steps_per_frame(robot.embodiment.control_rate_hz, fps, "recording fps")
    steps = max_steps or spec.episode_steps
    out_dir.mkdir(parents=True, exist_ok=True)
    recorded: list[RecordedEpisode] = []
    failed: list[int] = []
    policy = ExpertPolicy(variation)
    for index in range(episodes):
        seed = first_seed + index
        buffer = _EpisodeBuffer(stride)
        result = run_episode(robot, policy, seed, steps, on_step=buffer.keep, frames_every=stride)
        if successful_only and not result.success:
            failed.append(seed)
            if on_episode is not None:
                on_episode(RecordedEpisode(None, result, 0))
            continue
        episode = Episode(
            images={name: np.stack(frames) for name, frames in buffer.images.items()},
            qpos=np.stack(buffer.qpos),
            action=np.stack(buffer.action),
            qvel=np.stack(buffer.qvel),
            effort=np.stack(buffer.effort),
            fps=fps,
            embodiment=robot.embodiment.name,
            task=robot.task_name,
            instruction=spec.instruction,
            joint_names=robot.embodiment.joint_names,
            seed=seed,
            success=result.success,
            sim=True,
        )
        path = write_episode(episode_path(out_dir, len(recorded)), episode, compression=compression)
        item = RecordedEpisode(path, result, episode.length)
        recorded.append(item)
        if on_episode is not None:
            on_episode(item)
    if (variation is not None and variation.active) or successful_only:
        used = variation or ExpertVariation()
        manifest = {"variation": used.as_dict(), "first_seed": first_seed, "episodes": episodes}
        write_text_atomically(
            out_dir / "variation.json", json.dumps(manifest | {"failed_seeds": failed}, indent=2) + "\n"
        )
    return recorded
