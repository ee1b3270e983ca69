"""IDM training: episode split, normalisation, AdamW with warm-up + cosine, SmoothL1, metrics, resumable checkpoints.

Deterministic for a seed: batches are drawn by a numpy generator and augmentation by a torch generator seeded
from it, and both generators' states (and torch's global one, for dropout) are saved in every checkpoint, so a
run resumed from `last.safetensors` continues exactly as if it had never stopped.

The data is a directory of HDF5 episode files or a LeRobotDataset v3 directory (``meta/info.json`` with a v3
``codebase_version``); either way the split is over whole episodes and split.json lists episode names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from eva_runtime.idm.augment import Augmentation, augment
from eva_runtime.idm.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.dataset import EpisodeSource, IdmDataset, load_episodes, source_name, split_by_episode
from eva_runtime.idm.network import InverseDynamicsModel
from eva_runtime.records.hdf5_episodes import dataset_digest, list_episodes
from eva_runtime.records.lerobot_episodes import lerobot_episode_refs
from eva_runtime.records.lerobot_meta import is_lerobot_v3, lerobot_codebase_version, lerobot_digest

__all__ = ["TrainSettings", "evaluate_idm", "train_idm"]


@dataclass(frozen=True)
class TrainSettings:
    data: Path
    out: Path
    steps: int = 20_000
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1
    held_out: float = 0.1
    seed: int = 0
    eval_every: int = 1000
    threads: int = 2
    joint_tolerance: float = 0.05  # rad: accuracy = every arm joint within this
    gripper_tolerance: float = 0.1  # gripper units
    augmentation: Augmentation = field(default_factory=Augmentation)


def learning_rate(settings: TrainSettings, step: int) -> float:
    warmup = max(1, int(settings.warmup_fraction * settings.steps))
    if step < warmup:
        return settings.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, settings.steps - warmup)
    return settings.learning_rate * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def evaluate_idm(
    model: InverseDynamicsModel, dataset: IdmDataset, settings: TrainSettings, batch_size: int = 128
) -> dict[str, object]:
    """Per-joint MAE (embodiment units) and accuracy over every sample of `dataset`."""
    model.eval()
    errors = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            pixels, actions = dataset.batch(np.arange(start, min(start + batch_size, len(dataset))))
            errors.append(np.abs(model(torch.from_numpy(pixels)).numpy() - actions))
    error = np.concatenate(errors)
    grippers = np.zeros(error.shape[1], dtype=bool)
    grippers[list(model.config.gripper_indices)] = True
    within = np.where(grippers, error <= settings.gripper_tolerance, error <= settings.joint_tolerance)
    return {
        "mae": [round(float(v), 5) for v in error.mean(axis=0)],
        "arm_mae": round(float(error[:, ~grippers].mean()), 5),
        "gripper_mae": round(float(error[:, grippers].mean()), 5),
        "accuracy": round(float(within.all(axis=1).mean()), 5),
        "samples": len(error),
    }


def _normalised(config: IdmConfig, actions: np.ndarray) -> IdmConfig:
    std = np.maximum(actions.std(axis=0), 1e-3)  # a joint that never moves must not divide by zero
    return config.model_copy(update={"action_mean": tuple(actions.mean(axis=0)), "action_std": tuple(std)})


def episode_sources(data: Path) -> tuple[list[EpisodeSource], Callable[[], str]]:
    """The episodes of ``data`` (HDF5 files or LeRobot v3 episodes) and how to digest them."""
    if is_lerobot_v3(data):
        return [(data, ref) for ref in lerobot_episode_refs(data)], lambda: lerobot_digest(data)
    version = lerobot_codebase_version(data)
    if version is not None:
        # Say so rather than report "0 episodes": older LeRobot layouts (one file per episode) are not read.
        raise ValueError(f"{data}: LeRobot dataset version {version}; only v3.x (or HDF5 episodes) can be trained on")
    paths = list_episodes(data)
    sources: list[EpisodeSource] = list(paths)
    return sources, lambda: dataset_digest(paths)


def train_idm(
    settings: TrainSettings,
    config: IdmConfig,
    resume: bool = False,
    on_progress: Callable[[int, float, dict | None], None] | None = None,
) -> tuple[InverseDynamicsModel, list[dict]]:
    """Train (or resume) into `settings.out`; returns the model and the evaluation history."""
    torch.set_num_threads(settings.threads)
    paths, digest_of = episode_sources(settings.data)
    if len(paths) < 2:
        raise ValueError(f"{settings.data}: need at least 2 episodes (one held out), found {len(paths)}")
    train_paths, validation_paths = split_by_episode(paths, settings.held_out, settings.seed)
    digest = digest_of()
    train_set = IdmDataset(load_episodes(train_paths, config), config)
    validation_set = IdmDataset(load_episodes(validation_paths, config), config)
    last = settings.out / "last.safetensors"
    if resume and last.is_file():
        model, optimizer, state, rng = _resumed(last, settings, config, digest)
    else:
        model, optimizer, state, rng = _fresh(settings, config, train_set, digest)
    settings.out.mkdir(parents=True, exist_ok=True)
    _write_split(settings.out / "split.json", train_paths, validation_paths)
    mean, std = model.action_mean, model.action_std
    generator = torch.Generator()
    best = min((h["validation"]["arm_mae"] for h in state.history or []), default=math.inf)
    while state.step < settings.steps:
        loss = _train_step(model, optimizer, train_set, settings, state, rng, generator, mean, std)
        report = None
        if state.step % settings.eval_every == 0 or state.step == settings.steps:
            state.epoch = state.step * settings.batch_size // len(train_set)
            report = {"step": state.step, "epoch": state.epoch, "loss": float(loss.detach())}
            report["validation"] = evaluate_idm(model, validation_set, settings)
            best = _record_evaluation(model, optimizer, settings, state, rng, report, best)
        if on_progress is not None:
            on_progress(state.step, float(loss.detach()), report)
    return model, state.history


def _resumed(
    last: Path, settings: TrainSettings, config: IdmConfig, digest: str
) -> tuple[InverseDynamicsModel, torch.optim.Optimizer, TrainingState, np.random.Generator]:
    """Model, optimiser, state and batch generator from `last`, refused when its data or configuration differ."""
    model, optimizer, state = load_checkpoint(last, torch.optim.AdamW, restore_rng=True, lr=settings.learning_rate)
    if state.data_digest != digest:
        raise ValueError(f"{last}: was trained on other data (digest {state.data_digest[:12]}...)")
    # The action normalisation is fitted to the data, not chosen: compare everything else.
    unnormalised = {"action_mean": (), "action_std": ()}
    if model.config.model_copy(update=unnormalised) != config.model_copy(update=unnormalised):
        raise ValueError(f"{last}: was trained with another IDM configuration; resume with the same options")
    rng = np.random.default_rng()
    rng.bit_generator.state = state.numpy_rng
    return model, optimizer, state, rng


def _fresh(
    settings: TrainSettings, config: IdmConfig, train_set: IdmDataset, digest: str
) -> tuple[InverseDynamicsModel, torch.optim.Optimizer, TrainingState, np.random.Generator]:
    """A new model normalised on the training episodes' actions, its optimiser, state and batch generator."""
    torch.manual_seed(settings.seed)
    model = InverseDynamicsModel(_normalised(config, train_set.actions()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    return model, optimizer, TrainingState(data_digest=digest, history=[]), rng


def _write_split(path: Path, train_paths: list[EpisodeSource], validation_paths: list[EpisodeSource]) -> None:
    """split.json: the training and the held-out episodes, by name."""
    path.write_text(
        json.dumps(
            {
                "train": [source_name(p) for p in train_paths],
                "validation": [source_name(p) for p in validation_paths],
            }
        )
    )


def _train_step(
    model: InverseDynamicsModel,
    optimizer: torch.optim.Optimizer,
    train_set: IdmDataset,
    settings: TrainSettings,
    state: TrainingState,
    rng: np.random.Generator,
    generator: torch.Generator,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """One optimiser step on a random augmented batch; advances `state.step` and returns the loss."""
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(settings, state.step)
    pixels, actions = train_set.batch(rng.integers(0, len(train_set), settings.batch_size))
    # Augmentation draws from its own generator, seeded from the batch generator, so a resume replays it exactly.
    generator.manual_seed(int(rng.integers(0, 2**62)))
    inputs = augment(torch.from_numpy(pixels), settings.augmentation, generator)
    loss = F.smooth_l1_loss(model.normalized(inputs), (torch.from_numpy(actions) - mean) / std)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    state.step += 1
    return loss


def _record_evaluation(
    model: InverseDynamicsModel,
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    state: TrainingState,
    rng: np.random.Generator,
    report: dict,
    best: float,
) -> float:
    """Save `last` (and `best` when the arm MAE improved), append the report to metrics.jsonl; return the best MAE."""
    state.history.append(report)
    state.numpy_rng = rng.bit_generator.state
    save_checkpoint(settings.out / "last.safetensors", model, optimizer, state)
    if report["validation"]["arm_mae"] < best:
        best = report["validation"]["arm_mae"]
        save_checkpoint(settings.out / "best.safetensors", model, None, state)
    with open(settings.out / "metrics.jsonl", "a") as log:
        log.write(json.dumps(report) + "\n")
    return best
