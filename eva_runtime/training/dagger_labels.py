"""DAgger clips: the frames a learned model saw at its own closed-loop plan requests, followed by the expert's
future from that exact state, as training clips for the world model's SFT.

Each captured request (`control/plan_states.py`) holds the K observed frames and the simulator's and safety
filter's state. The oracle's simulation restores that state and the scripted expert continues from it, joining
its script where the state is (`sim.experts.join_step`: a hand that is off the cube when the script would close
goes back above it). The clip is the request's K - 1 older frames and the expert's `horizon` frames from the
state (the first of which is the request's newest frame), the layout of every SFT clip. Saved as one `.npz`
(plain arrays, `allow_pickle=False` on load) with the stages before and after each label, so what the labels
teach is visible before any training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.control.plan_states import CapturedStates
from eva_runtime.file_hash import file_sha256
from eva_runtime.npz_file import save_npz

__all__ = ["ClipSet", "label_states", "load_clip_set", "merge_clip_sets", "save_clip_set"]


@dataclass(frozen=True)
class ClipSet:
    frames: np.ndarray  # (N, K - 1 + horizon, H, W, 3) uint8
    actions: np.ndarray  # (N, horizon, dof) the expert's commands at the future frames
    seeds: np.ndarray  # (N,) the episode each state came from
    steps: np.ndarray  # (N,) the state's script position, and where the expert joined
    joined: np.ndarray
    stage_start: np.ndarray  # (N,) the task's stage at the state and at the label's end
    stage_end: np.ndarray
    instruction: str
    history_frames: int
    fps: float
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    def summary(self) -> dict:
        """What the labels teach: how many rejoin the script earlier, and the stages they start and end at."""
        return {
            "clips": len(self),
            "rejoined": int((self.joined != self.steps).sum()),
            "stage_start": np.bincount(self.stage_start, minlength=5).tolist(),
            "stage_end": np.bincount(self.stage_end, minlength=5).tolist(),
            "stage_gained_mean": float((self.stage_end - self.stage_start).mean()),
        }


def label_states(
    states: CapturedStates,
    task: str,
    embodiment,
    horizon: int,
    progress: Callable[[int, int], None] | None = None,
) -> ClipSet:
    """One clip per captured request: its observed history and the expert's future from its state."""
    from eva_runtime.world_model.oracle import OracleWorldModel

    meta = states.metadata
    camera, size = meta["camera"], tuple(meta["image_size"])
    history = states.frames.shape[1]
    oracle = OracleWorldModel(task, embodiment, float(meta["fps"]), (camera,), size)
    clips, actions, joined, start, end = [], [], [], [], []
    try:
        for i in range(len(states)):
            future = oracle.imagine_rejoined(states.oracle_state(i), horizon)
            clips.append(np.concatenate([states.frames[i, : history - 1], future.frames[camera]]))
            actions.append(future.actions.astype(np.float32))
            joined.append(future.joined_step)
            start.append(future.stage_start)
            end.append(future.stage_end)
            if progress is not None:
                progress(i + 1, len(states))
    finally:
        oracle.close()
    return ClipSet(
        frames=np.stack(clips),
        actions=np.stack(actions),
        seeds=states.seed.astype(np.int64),
        steps=states.step.astype(np.int64),
        joined=np.asarray(joined, np.int64),
        stage_start=np.asarray(start, np.int64),
        stage_end=np.asarray(end, np.int64),
        instruction=str(meta["instruction"]),
        history_frames=history,
        fps=float(meta["fps"]),
    )


def merge_clip_sets(sets: list[ClipSet]) -> ClipSet:
    """One clip set of several (DAgger aggregates every iteration's labels); they must agree in instruction,
    history, fps and clip shape."""
    first = sets[0]

    def kind(s: ClipSet) -> tuple:
        return s.instruction, s.history_frames, s.fps, s.frames.shape[1:]

    for other in sets[1:]:
        if kind(other) != kind(first):
            raise ValueError(
                f"clip sets differ: {other.instruction!r}, K {other.history_frames}, {other.fps} fps, "
                f"{other.frames.shape[1:]} against {first.instruction!r}, K {first.history_frames}, {first.fps} fps, "
                f"{first.frames.shape[1:]}"
            )
    arrays = {
        name: np.concatenate([getattr(s, name) for s in sets])
        for name in ("frames", "actions", "seeds", "steps", "joined", "stage_start", "stage_end")
    }
    return ClipSet(**arrays, instruction=first.instruction, history_frames=first.history_frames, fps=first.fps)


def save_clip_set(path: Path | str, clips: ClipSet) -> str:
    """Write the clips (compressed); returns the file's SHA-256."""
    arrays = {
        "frames": clips.frames,
        "actions": clips.actions,
        "seeds": clips.seeds,
        "steps": clips.steps,
        "joined": clips.joined,
        "stage_start": clips.stage_start,
        "stage_end": clips.stage_end,
        "instruction": np.asarray(clips.instruction),
        "history_frames": np.int64(clips.history_frames),
        "fps": np.float64(clips.fps),
    }
    save_npz(path, arrays)  # the same clips give the same bytes, so the hash names the content
    return file_sha256(path)


def load_clip_set(path: Path | str) -> ClipSet:
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        frames = data["frames"]
        if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"{path}: frames must be uint8 (N, T, H, W, 3), got {frames.dtype} {frames.shape}")
        return ClipSet(
            frames=frames,
            actions=data["actions"],
            seeds=data["seeds"],
            steps=data["steps"],
            joined=data["joined"],
            stage_start=data["stage_start"],
            stage_end=data["stage_end"],
            instruction=str(data["instruction"]),
            history_frames=int(data["history_frames"]),
            fps=float(data["fps"]),
            sha256=file_sha256(path),
        )
