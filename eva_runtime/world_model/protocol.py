"""The WorldModel protocol: recent frames + instruction -> G imagined futures of H frames at a fixed fps.

Frame 0 of every rollout is the conditioning (current) frame, as in Wan image-to-video where the 49 generated
frames start with the input image; frames 1..H-1 are the imagined future, `1 / fps` seconds apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["PrivilegedContext", "Rollout", "RolloutRequest", "WorldModel"]


@dataclass(frozen=True)
class RolloutRequest:
    frames: Mapping[str, np.ndarray]  # camera -> (K, height, width, 3) uint8, the K most recent frames
    instruction: str
    horizon: int  # frames per rollout, frame 0 included
    seed: int
    samples: int = 1  # G rollouts of the same condition
    # Privileged simulator state. Only test instruments (the oracle) read it; a learned model must not. Opaque to
    # the runtime: a `PrivilegedContext` in process, its `to_wire()` dict after crossing a process boundary.
    privileged_state: object | None = None


class PrivilegedContext(Protocol):
    """What a test-instrument world model knows beyond the cameras; it encodes itself for the planner process
    (plain arrays and numbers), and the instrument that reads it decodes it, so the runtime carries it unread."""

    def to_wire(self) -> dict: ...


@dataclass(frozen=True)
class Rollout:
    frames: Mapping[str, np.ndarray]  # camera -> (G, horizon, height, width, 3) uint8
    fps: float
    seconds: float  # wall time spent generating
    model_id: str


class WorldModel(Protocol):
    model_id: str
    fps: float
    cameras: tuple[str, ...]

    def rollout(self, request: RolloutRequest) -> Rollout: ...
