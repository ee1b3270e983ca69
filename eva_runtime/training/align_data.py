"""What Flow-GRPO alignment draws from (see :mod:`.align`): the SFT pipeline, the reward (the bundle's frozen IDM,
with the simulated task progress when configured), the training and held-out conditions (observed frame(s) +
instruction + recorded future + where in which simulated episode they were recorded) and their text embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eva_runtime.training.align_config import AlignConfig

__all__ = ["AlignData", "load_align_data"]


@dataclass(frozen=True)
class AlignData:
    """What every iteration and check draws from: the SFT pipeline, the reward, the conditions, their prompts."""

    pipeline: Any
    fps: float
    reward_fn: Any
    train_conditions: list
    heldout: list
    embeds: dict
    latent_count: int
    closed_loop_conditions: list = field(default_factory=list)  # from a model's own plan requests (config.closed_loop)


def load_align_data(config: AlignConfig) -> AlignData:
    """The SFT pipeline, the bundle's IDM reward, training and held-out conditions and their text embeddings."""
    import torch
    from diffusers import WanImageToVideoPipeline

    from eva_runtime.training.wm_data import load_videos
    from eva_runtime.world_model.wan.latents import latent_frames
    from eva_runtime.world_model.wan.model_files import verify_hashes

    base = Path(config.base)
    verify_hashes(base)
    pipeline = WanImageToVideoPipeline.from_pretrained(str(base), dtype=torch.float32)
    described = json.loads((base / "eva_world_model.json").read_text())
    fps, camera = float(described["fps"]), described["camera"]
    reward_fn, steps_per_frame = _reward(config, pipeline.vae, fps)
    videos = load_videos(config.data, camera, fps, tuple(described["config"]["image_size"]))
    if len(videos) <= config.held_out:
        raise ValueError(f"{config.data}: {len(videos)} episodes, need more than held_out={config.held_out}")
    starts, horizon = config.condition_starts, config.horizon
    history = config.history_frames  # the observed frames the model conditions on, as in SFT and on the robot
    train_conditions = _conditions(videos[: -config.held_out], starts, horizon, history, steps_per_frame)
    heldout = _conditions(videos[-config.held_out :], starts, horizon, history, steps_per_frame)
    _check_replay(reward_fn, train_conditions)
    picks = np.linspace(0, len(heldout) - 1, min(config.guard.eval_conditions, len(heldout))).round().astype(int)
    heldout = [heldout[i] for i in picks]
    closed_loop = _closed_loop_conditions(config, described) if config.closed_loop else []
    temporal = int(pipeline.vae.config.scale_factor_temporal)
    latent_count = latent_frames(config.history_frames - 1 + config.horizon, temporal)
    with torch.no_grad():
        embeds = {
            text: pipeline.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=32)[0]
            for text in sorted({c.instruction for c in train_conditions + heldout + closed_loop})
        }
    return AlignData(pipeline, fps, reward_fn, train_conditions, heldout, embeds, latent_count, closed_loop)


def _reward(config: AlignConfig, vae, fps: float):
    """The bundle's frozen IDM and reward (refused when the IDM runs at another rate than the world model), with the
    task progress when configured; and the control steps per model frame (a condition's step in its episode)."""
    from eva_runtime.bundle import load_bundle
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.reward import RewardConfig
    from eva_runtime.sim.bimanual_sim import steps_per_frame
    from eva_runtime.training.idm_reward import IdmReward
    from eva_runtime.training.task_progress import TaskProgress
    from eva_runtime.training.task_reward import TaskAwareReward

    bundle = load_bundle(Path(config.bundle))
    decoder = IdmDecoder(bundle.idm_path, bundle.hashes()["idm"])
    if abs(decoder.fps - fps) > 1e-9:
        raise ValueError(f"the world model runs at {fps} fps, the bundle's IDM at {decoder.fps}")
    stated = bundle.manifest.reward
    reward_config = RewardConfig.from_embodiment(
        bundle.embodiment, decoder.fps, p0=config.p0 or stated.p0, form=stated.form, gamma=stated.gamma
    )
    idm_reward = IdmReward(vae, decoder, reward_config, config.history_frames)
    stride = steps_per_frame(bundle.embodiment.control_rate_hz, fps, "the world model's fps")
    task = config.task_reward
    if task is None:
        return idm_reward, stride
    progress = TaskProgress(task.task, bundle.embodiment, task.hold_ticks)
    return TaskAwareReward(idm_reward, progress, fps, task.weight), stride


def _check_replay(reward_fn, conditions) -> None:
    """With the task reward, replay the latest start of the first episode now: data the simulation cannot
    reproduce (another task, a real robot's seeds, a changed simulation) is refused before any training."""
    from eva_runtime.training.task_reward import TaskAwareReward

    if not isinstance(reward_fn, TaskAwareReward):
        return
    seeded = [c.origin for c in conditions if c.origin is not None]
    if not seeded:
        raise ValueError("task_reward needs simulated episodes (with seeds); none of the training episodes has one")
    latest = max((o for o in seeded if o.seed == seeded[0].seed), key=lambda origin: origin.step)
    reward_fn.progress.start_state(latest.seed, latest.step, latest.command)


def _conditions(videos, starts, horizon: int, history: int, steps_per_frame: int):
    """Every (episode, start) with a full recorded future: Condition objects with `history` observed frames (the
    episode's first repeated before it has that many, as SFT pads and the robot's frame history does), the truth
    and, for a seeded (simulated) episode, the origin its start state is regenerated from."""
    from eva_runtime.training.flow_grpo import Condition, ConditionOrigin

    found = []
    for video in videos:
        for start in starts:
            if start + horizon <= len(video.frames):
                origin = None
                if video.seed is not None:
                    origin = ConditionOrigin(int(video.seed), start * steps_per_frame, video.actions[start])
                indices = np.clip(np.arange(start - history + 1, start + 1), 0, None)
                observed, future = video.frames[indices], video.frames[start : start + horizon]
                found.append(Condition(observed, video.instruction, future, origin))
    if not found:
        raise ValueError("no condition with a full future: check condition_starts, horizon and the episodes")
    return found


def _closed_loop_conditions(config: AlignConfig, described: dict) -> list:
    """One condition per captured plan request: the frames the model was sent, its start the captured state itself.
    Refused when the capture does not fit the model (camera, frame size, observed frames) or the reward's task."""
    from eva_runtime.control.plan_states import load_captured_states
    from eva_runtime.training.flow_grpo import Condition

    assert config.closed_loop is not None and config.task_reward is not None
    path = Path(config.closed_loop.states)
    states = load_captured_states(path)
    meta = states.metadata
    size = tuple(described["config"]["image_size"])
    found = {
        "task": (meta.get("task"), config.task_reward.task),
        "camera": (meta.get("camera"), described["camera"]),
        "image_size": (tuple(meta.get("image_size", ())), size),
        "observed frames": (states.frames.shape[1], config.history_frames),
        "fps": (meta.get("fps"), float(described["fps"])),
    }
    for name, (captured, wanted) in found.items():
        if captured != wanted:
            raise ValueError(f"{path}: closed-loop states captured with {name} {captured!r}, the run needs {wanted!r}")
    conditions = []
    for i in range(len(states)):
        conditions.append(Condition(states.frames[i], str(meta["instruction"]), None, states.oracle_state(i)))
    return conditions
