"""Tiny Wan models and synthetic video episodes for the world-model tests (real diffusers classes, small configs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eva_runtime.records.hdf5_episodes import Episode, episode_path, write_episode
from eva_runtime.world_model.wan.components import TinyWanConfig, build_pipeline, instruction_vocabulary

INSTRUCTION = "move the red square to the right"
JOINTS = tuple(f"j{i}" for i in range(14))


def tiny_config(size: int = 32) -> TinyWanConfig:
    return TinyWanConfig(
        image_size=(size, size),
        vae_base_dim=4,
        vae_dim_mult=(1, 1, 1),
        vae_z_dim=4,
        heads=2,
        head_dim=12,
        layers=1,
        ffn_dim=32,
        freq_dim=16,
        text_dim=16,
        text_layers=1,
        text_heads=2,
        text_ff=32,
        vocabulary=instruction_vocabulary([INSTRUCTION]),
    )


def tiny_pipeline(seed: int = 0, size: int = 32):
    import torch

    torch.manual_seed(seed)
    return build_pipeline(tiny_config(size), seed=seed)


def save_tiny_base(directory: Path, seed: int = 0, size: int = 32, history_frames: int | None = None) -> Path:
    """A saved, hash-listed tiny base model directory like `eva train world-model-base` writes (with
    `history_frames`, described as trained with that many observed frames, as the recipe writes)."""
    from eva_runtime.world_model.wan.model_files import write_hashes

    pipeline = tiny_pipeline(seed, size)
    pipeline.save_pretrained(directory, safe_serialization=True)
    description = {"config": tiny_config(size).as_dict(), "camera": "cam_high", "fps": 12.5}
    if history_frames is not None:
        description["history_frames"] = history_frames
    (directory / "eva_world_model.json").write_text(json.dumps(description))
    write_hashes(directory)
    return directory


def square_video(frames: int, size: int, start: int, speed: int = 1) -> np.ndarray:
    """A red square moving right over a grey floor: a motion the model can learn."""
    video = np.full((frames, size, size, 3), 90, np.uint8)
    for t in range(frames):
        x = (start + speed * t) % (size - 6)
        video[t, size // 2 - 3 : size // 2 + 3, x : x + 6] = (220, 30, 30)
    return video


def scattered_cube_video(name: str, seed: int, length: int = 16, size: int = 32, instruction: str = INSTRUCTION):
    """An `EpisodeVideo` whose 3x3 red cube jumps to a random place every frame over a grey floor, with random
    actions: training data with the scene's colours and no motion to learn (for tests of training mechanics)."""
    from eva_runtime.training.wm_data import EpisodeVideo

    rng = np.random.default_rng(seed)
    frames = np.full((length, size, size, 3), 80, np.uint8)
    for t in range(length):
        row, col = rng.integers(0, size - 3, 2)
        frames[t, row : row + 3, col : col + 3] = (202, 54, 54)
    return EpisodeVideo(name, frames, rng.normal(size=(length, 14)).astype(np.float32), instruction, seed)


def save_scattered_cache(path: Path, episodes: int, length: int, size: int, instruction: str) -> Path:
    """A video cache (`eva train world-model-cache`'s format) of `episodes` scattered-cube videos."""
    from eva_runtime.training.video_cache import save_video_cache
    from eva_runtime.training.wm_assemble import _text_embeds

    vocabulary = instruction_vocabulary([instruction])
    embeds = _text_embeds(TinyWanConfig(image_size=(size, size), vocabulary=vocabulary), [instruction])
    videos = [scattered_cube_video(f"episode_{i:04d}", i, length, size, instruction) for i in range(episodes)]
    save_video_cache(path, videos, 12.5, "cam_high", (instruction,), embeds, vocabulary)
    return path


def write_square_episodes(directory: Path, count: int, frames: int = 26, size: int = 32) -> Path:
    """`count` episodes at 25 fps (the recorder's rate) whose 12.5 fps videos have `frames // 2` frames."""
    return write_video_episodes(directory, [square_video(frames, size, start=index % 7) for index in range(count)])


def write_video_episodes(directory: Path, videos: list[np.ndarray], joint_names: tuple[str, ...] = JOINTS) -> Path:
    """One 25 fps `cam_high` episode per video, with slowly rising joints (seeds 0, 1, ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, video in enumerate(videos):
        actions = np.linspace(0, 0.1, len(video))[:, None] * np.ones((1, len(joint_names)))
        episode = Episode(
            images={"cam_high": video},
            qpos=actions,
            action=actions,
            qvel=None,
            fps=25.0,
            embodiment="aloha_sim",
            task="transfer_cube",
            instruction=INSTRUCTION,
            joint_names=joint_names,
            seed=index,
            success=True,
        )
        write_episode(episode_path(directory, index), episode)
    return directory


def record_expert_episodes(directory: Path, count: int, first_seed: int = 3, steps: int = 60) -> Path:
    """Short scripted-expert episodes from the real simulation at 12.5 fps, recorded as `eva sim record` does:
    data whose conditions the task-progress measure can replay."""
    from eva_runtime.embodiment import load_embodiment
    from eva_runtime.robots.mujoco_robot import MujocoRobot
    from eva_runtime.sim.demonstrations import record_demonstrations

    calibration = Path(__file__).resolve().parents[1] / "calibration" / "aloha_sim.yaml"
    robot = MujocoRobot(load_embodiment(calibration), "transfer_cube")
    robot.connect()
    try:
        record_demonstrations(robot, count, directory, fps=12.5, first_seed=first_seed, max_steps=steps)
    finally:
        robot.disconnect()
    return directory


class KnownDirection:
    """An alignment problem with a known answer, for learning tests: two conditions (a square at two places), G
    rollouts each, and a reward for imagined motion along +channel 0 of latent space away from the observed frame.
    A rank-1 adapter on the output projection keeps the update's variance CI-sized."""

    def __init__(self, seed: int, groups_of: int) -> None:
        import torch

        from eva_runtime.training.flow_grpo import condition_key
        from eva_runtime.world_model.wan.latents import encode_frames
        from eva_runtime.world_model.wan.lora import add_lora
        from eva_runtime.world_model.wan.sampling import flow_sigmas

        self.pipeline = tiny_pipeline(seed=seed)
        self.transformer = self.pipeline.transformer
        add_lora(self.transformer, "align", rank=1, alpha=4, targets=("proj_out",))
        self.parameters = [p for p in self.transformer.parameters() if p.requires_grad]
        embeds = self.pipeline.encode_prompt(INSTRUCTION, do_classifier_free_guidance=False, max_sequence_length=32)
        self.embeds = embeds[0].detach().expand(2 * groups_of, -1, -1)
        self.condition = torch.zeros(2 * groups_of, 4, 3, 8, 8)
        self.keys: list[str] = []
        for g, start in enumerate([0, 9]):
            frame = square_video(1, 32, start)
            self.condition[g * groups_of : (g + 1) * groups_of, :, :1] = encode_frames(self.pipeline.vae, frame[None])
            self.keys += [condition_key(frame, INSTRUCTION)] * groups_of
        self.sigmas = flow_sigmas(self.pipeline.scheduler, 4)

    def trainee(self, optimizer):
        """The adapted transformer as an update trains it (no accelerate: its own backward)."""
        from eva_runtime.training.update_batch import Trainee

        return Trainee(self.transformer, self.transformer, optimizer, lambda loss: loss.backward(), self.parameters)

    def batch(self, iteration: int):
        """Iteration's rollouts to sample: the two conditions' groups, noise and generator seeded by `iteration`."""
        import torch

        from eva_runtime.training.update_batch import RolloutBatch

        noise = torch.randn(self.condition.shape, generator=torch.Generator().manual_seed(iteration))
        generator = torch.Generator().manual_seed(100 + iteration)
        return RolloutBatch(self.condition, self.embeds, 1, self.keys, noise, self.sigmas, generator)

    @staticmethod
    def reward(latents):
        score = (latents[:, 0, 1:] - latents[:, 0, :1]).mean((-1, -2, -3))
        return score, {"direction": float(score.mean())}

    def evaluate(self) -> float:
        """The mean reward of deterministic (ODE) rollouts from three fixed noises."""
        import torch

        from eva_runtime.world_model.wan.sampling import Denoiser, euler_sample

        values = []
        for seed in range(3):
            noise = torch.randn(self.condition.shape, generator=torch.Generator().manual_seed(1000 + seed))
            with torch.no_grad():
                final = euler_sample(Denoiser(self.transformer, self.embeds, self.condition, 1), noise, self.sigmas)
            values.append(float(self.reward(final)[0].mean()))
        return float(np.mean(values))
