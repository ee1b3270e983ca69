"""A compact, pickle-free cache of world-model training data: one camera's video per episode at the model's fps
and size, the commanded actions, the instructions and their fixed text embeddings, in one `.npz`.

Why: the world-model recipe runs where the simulator and the HDF5 recordings may not be (a lent GPU machine with
no MuJoCo, a training server), and a 64x64 video of the simulated scene compresses ~25x in an `.npz`
(200 episodes in ~10 MB). Everything is stored as plain arrays (`allow_pickle=False` on load), and the file's
SHA-256 goes into every result made from it; the file's bytes depend only on its arrays (`npz_file.py`), so the
same recordings cached again give the same SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.file_hash import file_sha256
from eva_runtime.npz_file import save_npz
from eva_runtime.training.wm_data import EpisodeVideo

__all__ = ["VideoCache", "load_video_cache", "save_video_cache"]


@dataclass(frozen=True)
class VideoCache:
    videos: list[EpisodeVideo]
    fps: float
    camera: str
    instructions: tuple[str, ...]
    text_embeds: np.ndarray  # (instructions, tokens, text_dim) float32, row i for instructions[i]
    vocabulary: tuple[str, ...]  # the word-level tokenizer's words: the text encoder is rebuilt from them
    sha256: str

    def embed_index(self, instruction: str) -> int:
        return self.instructions.index(instruction)


def save_video_cache(
    path: Path | str,
    videos: list[EpisodeVideo],
    fps: float,
    camera: str,
    instructions: tuple[str, ...],
    text_embeds: np.ndarray,
    vocabulary: tuple[str, ...],
) -> str:
    """Write the cache; returns its SHA-256. Every episode must have the same length (they are stacked)."""
    lengths = {len(v.frames) for v in videos}
    if len(lengths) != 1:
        raise ValueError(f"episodes must have one length to be stacked, got {sorted(lengths)}")
    missing = sorted({v.instruction for v in videos} - set(instructions))
    if missing:
        raise ValueError(f"instructions without a text embedding: {missing}")
    arrays = {
        "frames": np.stack([v.frames for v in videos]),
        "actions": np.stack([v.actions for v in videos]).astype(np.float32),
        "names": np.asarray([v.name for v in videos]),
        "episode_instructions": np.asarray([v.instruction for v in videos]),
        "seeds": np.asarray([-1 if v.seed is None else v.seed for v in videos], np.int64),
        "instructions": np.asarray(instructions),
        "text_embeds": np.asarray(text_embeds, np.float32),
        "vocabulary": np.asarray(vocabulary),
        "fps": np.float64(fps),
        "camera": np.asarray(camera),
    }
    save_npz(path, arrays)  # the same recordings give the same bytes: a rebuilt cache keeps its SHA-256
    return file_sha256(path)


def load_video_cache(path: Path | str) -> VideoCache:
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        frames, actions = data["frames"], data["actions"]
        if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"{path}: frames must be uint8 (E, T, H, W, 3), got {frames.dtype} {frames.shape}")
        videos = [
            EpisodeVideo(str(name), frames[i], actions[i], str(text), None if seed < 0 else int(seed))
            for i, (name, text, seed) in enumerate(
                zip(data["names"], data["episode_instructions"], data["seeds"], strict=True)
            )
        ]
        return VideoCache(
            videos=videos,
            fps=float(data["fps"]),
            camera=str(data["camera"]),
            instructions=tuple(str(t) for t in data["instructions"]),
            text_embeds=np.asarray(data["text_embeds"], np.float32),
            vocabulary=tuple(str(w) for w in data["vocabulary"]),
            sha256=file_sha256(path),
        )
