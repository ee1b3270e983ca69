"""Estimating the reward's penalty scale P0 from rollouts of the pre-RL model, and loading those rollouts.

P0 is a statistic (the mean by default) of the penalty P over rollouts: with it, a typical pre-RL rollout scores
``scale * 2 ** -gamma`` in the authors' form and about 1 in the paper's form. Rollouts are decoded action
sequences: ``.npy`` files of shape (G, T, D) (loaded without pickle), or, as stand-ins before a world model
exists, demonstration episodes cut into windows of the planning horizon (49 steps in EVA).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from eva_runtime.embodiment import Embodiment
from eva_runtime.records.hdf5_episodes import dataset_digest, list_episodes, read_episode
from eva_runtime.reward.config import RewardConfig
from eva_runtime.reward.numpy_reward import executability_batch

__all__ = ["STATISTICS", "P0Estimate", "Rollouts", "estimate_p0", "load_rollouts", "resample", "write_p0_yaml"]

STATISTICS = ("mean", "median")


@dataclass(frozen=True)
class P0Estimate:
    """P0 and the distribution of the penalties it came from."""

    p0: float
    statistic: str
    n_rollouts: int
    mean: float
    median: float
    p10: float
    p90: float


@dataclass(frozen=True, eq=False)
class Rollouts:
    """Rollout batches (each (G, T, D)) at one fps, with the files they came from."""

    batches: list[np.ndarray]
    fps: float
    files: list[Path]

    @property
    def count(self) -> int:
        return sum(batch.shape[0] for batch in self.batches)


def estimate_p0(action_batches: Iterable[np.ndarray], config: RewardConfig, statistic: str = "mean") -> P0Estimate:
    """P0 = ``statistic`` of the penalty over every rollout in ``action_batches`` ((G, T, D) or (T, D) arrays)."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    penalties = []
    for index, batch in enumerate(action_batches):
        batch = np.asarray(batch, dtype=np.float64)
        batch = batch[None] if batch.ndim == 2 else batch
        if batch.ndim == 3 and batch.shape[1] < config.min_steps:
            # Such a rollout scores 0 without a penalty: it would silently be dropped from the statistic.
            raise ValueError(f"rollout batch {index}: {batch.shape[1]} steps, fewer than min_steps {config.min_steps}")
        penalties.append(executability_batch(batch, config)["penalty"])
    if not penalties:
        raise ValueError("estimate_p0 needs at least one rollout")
    values = np.concatenate(penalties)
    p0 = float(np.mean(values) if statistic == "mean" else np.median(values))
    if not p0 > 0:
        raise ValueError(f"the rollouts' {statistic} penalty is {p0}: P0 must be > 0 (are the rollouts motionless?)")
    p10, median, p90 = (float(v) for v in np.percentile(values, [10, 50, 90]))
    return P0Estimate(p0, statistic, int(values.size), float(values.mean()), median, p10, p90)


def resample(actions: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Linearly interpolate (N, D) actions recorded at ``fps`` onto a ``target_fps`` grid over the same span."""
    if fps == target_fps:
        return actions
    duration = (len(actions) - 1) / fps
    times = np.arange(int(np.floor(duration * target_fps + 1e-9)) + 1) / target_fps
    source = np.arange(len(actions)) / fps
    return np.stack([np.interp(times, source, actions[:, d]) for d in range(actions.shape[1])], axis=1)


def _episode_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = list_episodes(path)
        if not files:
            raise ValueError(f"{path}: no episode_<n>.hdf5 files")
        return files
    return [path]


def load_rollouts(
    paths: Sequence[Path | str], embodiment: Embodiment, fps: float | None = None, horizon: int = 49
) -> Rollouts:
    """Rollouts from ``.npy`` files (G, T, D) and HDF5 episodes (directories or files).

    Episodes are resampled to ``fps`` when it is given (the world model's rate), else their own fps is used (all
    episodes must agree); each is cut into non-overlapping windows of ``horizon`` steps, a shorter tail dropped.
    ``.npy`` files carry no rate: they need ``fps``.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 4:
        raise ValueError(f"horizon must be an integer >= 4 (jerk needs four steps), got {horizon!r}")
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps}")
    arrays: list[tuple[Path, np.ndarray]] = []
    episodes = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"rollouts not found: {path}")
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            array = array[None] if array.ndim == 2 else array
            if array.ndim != 3 or array.shape[2] != embodiment.dof or not np.issubdtype(array.dtype, np.number):
                raise ValueError(f"{path}: expected numeric (G, T, {embodiment.dof}) actions, got {array.shape}")
            arrays.append((path, array.astype(np.float64)))
            continue
        for file in _episode_files(path):
            episode = read_episode(file, load_images=False)
            if episode.embodiment != embodiment.name or episode.joint_names != embodiment.joint_names:
                raise ValueError(f"{file}: recorded on {episode.embodiment!r}, not on {embodiment.name!r}")
            episodes.append((file, episode))
    if arrays and fps is None:
        raise ValueError(f"{arrays[0][0]}: .npy rollouts carry no frame rate; pass fps")
    rates = sorted({episode.fps for _, episode in episodes})
    if fps is None:
        if len(rates) != 1:
            raise ValueError(f"episodes have different fps {rates}: pass fps to resample them to one rate")
        fps = rates[0]
    batches = [array for _, array in arrays]
    for _, episode in episodes:
        actions = resample(episode.action, episode.fps, fps)
        windows = len(actions) // horizon
        if windows:
            batches.append(actions[: windows * horizon].reshape(windows, horizon, -1))
    if not batches:
        raise ValueError(f"no rollouts: every episode is shorter than the horizon ({horizon} steps at {fps} fps)")
    files = [path for path, _ in arrays] + [file for file, _ in episodes]
    return Rollouts(batches=batches, fps=float(fps), files=files)


def write_p0_yaml(
    path: Path | str,
    estimate: P0Estimate,
    config: RewardConfig,
    rollouts: Rollouts,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Record P0 with the reward configuration it belongs to and the digest of the rollout files."""
    from eva_runtime import __version__

    document = {
        "format": "eva-runtime/reward-p0-v1",
        **asdict(estimate),
        "fps": rollouts.fps,
        "data_digest": dataset_digest(rollouts.files),
        "data_files": [str(p) for p in rollouts.files],
        **(extra or {}),
        # The config's own p0 is what this file replaces: leaving it in would put two P0s side by side.
        "reward_config": {key: value for key, value in config.summary().items() if key != "p0"},
        "eva_runtime_version": __version__,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=120), encoding="utf-8")
    return path
