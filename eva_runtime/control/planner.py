"""Planner: observation -> world-model rollouts -> IDM decode -> executability score -> Plan, or a rejection.

For each request it samples G rollouts of the world model from the current frames and instruction, decodes all
of them with the IDM in one batched call, smooths the decoded actions, and scores each with the EVA
executability reward. The best rollout is returned as a :class:`Plan` when its reward reaches the threshold;
otherwise it samples again with a new seed, up to `attempts`, and then returns a rejection with every score
(the runtime holds and logs it). Action 0 of a plan belongs to the observation's time stamp, so the executor
can drop what became due while the plan was being made.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eva_runtime.control.executor import Plan
from eva_runtime.idm.decoder import IdmDecoder
from eva_runtime.idm.smoothing import moving_average
from eva_runtime.idm.windows import resize_video
from eva_runtime.reward import RewardConfig, executability
from eva_runtime.world_model.protocol import RolloutRequest, WorldModel

__all__ = ["PlanOutcome", "PlanRequest", "Planner", "PlannerSettings", "episode_seed_of", "request_seed"]


@dataclass(frozen=True)
class PlannerSettings:
    horizon: int = 37  # frames per rollout, frame 0 included
    samples: int = 1  # G rollouts per attempt
    attempts: int = 3  # resample budget
    threshold: float = 0.0  # minimum executability reward to execute a plan
    smooth: int = 3  # centred moving average over decoded frames (1: none)
    # Imagined frames sent back with a plan (evenly spaced, first and last kept) so operators can watch
    # imagination vs reality (ROS `~/rollout`); 0: none.
    preview_frames: int = 8
    # Send the executed rollout's frames back whole (the world model's cameras and size) with each plan, so the
    # loop can condition the next plan on the motion it is committed to (`PlanRequest.committed`).
    keep_imagined: bool = False
    # Which draw of the sampler's noise: 0 is the default; k > 0 samples every plan of the same requests with other
    # noise (the same observations, the same model). Closed loop, a model's success moves with its noise alone, so
    # two models are told apart against that spread (`eva eval ladder`, a rung's `sampling_draw`).
    sampling_draw: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.sampling_draw <= MAX_SAMPLING_DRAW:
            raise ValueError(f"sampling_draw must be in [0, {MAX_SAMPLING_DRAW}], got {self.sampling_draw}")

    def attempt_seed(self, request_seed: int, attempt: int) -> int:
        """The sampler's seed for one attempt at a request: distinct across requests, attempts and draws."""
        return self.sampling_draw * DRAW_STRIDE + request_seed * ATTEMPTS_PER_REQUEST + attempt


ATTEMPTS_PER_REQUEST = 1000
# Request seeds stay below 10**11 (episode seeds below 10**7), so their attempt seeds below 10**14; draws above
# that keep every seed under 2**63, which torch's and numpy's generators take.
DRAW_STRIDE = 10**14
MAX_SAMPLING_DRAW = 1000
REQUESTS_PER_EPISODE = 10_000  # request seeds of one episode: seed * 10_000 + the request's number


def request_seed(episode_seed: int, request_id: int) -> int:
    """The sampling seed of an episode's request_id-th plan request (distinct across episodes and requests)."""
    return episode_seed * REQUESTS_PER_EPISODE + request_id


def episode_seed_of(seed: int) -> int:
    """The episode seed a request seed was made from (`request_seed`'s inverse)."""
    return seed // REQUESTS_PER_EPISODE


@dataclass(frozen=True)
class PlanRequest:
    time: float  # robot-clock stamp of the observation
    frames: Mapping[str, np.ndarray]  # camera -> (K, H, W, 3)
    instruction: str
    seed: int
    privileged_state: object | None = None  # only for test-instrument world models (the oracle)
    # Imagined frames continuing the observation at the world model's fps (camera -> (C, H, W, 3)): the part of
    # the executing plan the robot will carry out while this one is made. The world model sees them after the
    # observed frames, and the plan starts C frames after `time`, where the robot will be when it lands.
    committed: Mapping[str, np.ndarray] | None = None

    def start_time(self, fps: float) -> float:
        """The time of the plan's action 0: the observation's, or the last committed frame's."""
        if not self.committed:
            return self.time
        return self.time + len(next(iter(self.committed.values()))) / fps

    def conditioning_frames(self) -> Mapping[str, np.ndarray]:
        """What the world model conditions on: each camera's observed frames, then its committed ones. The committed
        frames are the model's own (its size); the observed ones are shrunk to it as the model itself would."""
        if not self.committed:
            return self.frames
        joined = dict(self.frames)
        for camera, committed in self.committed.items():
            observed = resize_video(np.asarray(self.frames[camera]), committed.shape[1:3])
            joined[camera] = np.concatenate([observed, committed])
        return joined


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan | None
    scores: tuple[float, ...]  # every rollout's reward, in sampling order
    seconds: float
    reason: str = ""


class Planner:
    def __init__(
        self, world_model: WorldModel, decoder: IdmDecoder, reward: RewardConfig, settings: PlannerSettings
    ) -> None:
        if abs(world_model.fps - decoder.fps) > 1e-9:
            raise ValueError(f"world model fps {world_model.fps} differs from the IDM's {decoder.fps}")
        if abs(reward.dt - 1.0 / decoder.fps) > 1e-9:
            raise ValueError(f"reward dt {reward.dt} is not 1 / IDM fps ({1.0 / decoder.fps})")
        self.world_model = world_model
        self.decoder = decoder
        self.reward = reward
        self.settings = settings

    def plan(self, request: PlanRequest) -> PlanOutcome:
        began = time.perf_counter()
        scores: list[float] = []
        best: tuple[float, np.ndarray] | None = None
        preview: dict[str, np.ndarray] = {}
        imagined: dict[str, np.ndarray] = {}
        frames = request.conditioning_frames()  # the same for every attempt: resized and joined once
        attempt = 0
        for attempt in range(1, self.settings.attempts + 1):
            rollout = self.world_model.rollout(
                RolloutRequest(
                    frames=frames,
                    instruction=request.instruction,
                    horizon=self.settings.horizon,
                    seed=self.settings.attempt_seed(request.seed, attempt),
                    samples=self.settings.samples,
                    privileged_state=request.privileged_state,
                )
            )
            size = self.decoder.config.image_size
            videos = {
                camera: np.stack([resize_video(sample, size) for sample in rollout.frames[camera]])
                for camera in self.decoder.config.cameras
            }
            decoded = self.decoder.decode_batch(videos)
            for index, actions in enumerate(decoded):
                smoothed = moving_average(actions, self.settings.smooth)
                if not np.all(np.isfinite(smoothed)):
                    scores.append(float("nan"))
                    continue
                score = executability(smoothed, self.reward).reward
                scores.append(score)
                if best is None or score > best[0]:
                    best = (score, smoothed)
                    preview = self._preview(videos, index)
                    if self.settings.keep_imagined:
                        imagined = {camera: batch[index] for camera, batch in rollout.frames.items()}
            if best is not None and best[0] >= self.settings.threshold:
                break
        seconds = time.perf_counter() - began
        if best is None or not best[0] >= self.settings.threshold:
            reason = "no finite rollout" if best is None else f"best reward {best[0]:.3f} < {self.settings.threshold}"
            return PlanOutcome(None, tuple(scores), seconds, reason)
        metadata = {"rollout": preview} if preview else {}
        if imagined:
            metadata["imagined"] = imagined
        plan = Plan(
            start_time=request.start_time(self.decoder.fps),
            fps=self.decoder.fps,
            actions=best[1],
            model_id=self.world_model.model_id,
            score=best[0],
            latency_s=seconds,
            attempts=attempt,
            metadata=metadata,
        )
        return PlanOutcome(plan, tuple(scores), seconds)

    def _preview(self, videos: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        count = self.settings.preview_frames
        if count <= 0:
            return {}
        preview = {}
        for camera, batch in videos.items():
            picks = np.unique(np.linspace(0, batch.shape[1] - 1, min(count, batch.shape[1])).round().astype(int))
            preview[camera] = np.ascontiguousarray(batch[index, picks])
        return preview
