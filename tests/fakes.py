"""Stand-ins for what behaviour tests must not depend on: a clock the test advances, a robot that tracks every
command exactly and stamps its readings on that clock, and a world model whose rollouts are a known function of
its input. The real robots are tested on their own: the MuJoCo simulation, the Piper arms over python-can's
virtual bus."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from eva_runtime.embodiment import load_embodiment
from eva_runtime.robots.interface import CameraFrame, Observation, RobotInterface, check_command
from eva_runtime.safety import FilterResult
from eva_runtime.world_model.protocol import Rollout, RolloutRequest
from tests.conftest import CALIBRATION


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeRobot(RobotInterface):
    """Tracks every command exactly; frames and state are stamped on the test's clock unless frozen."""

    def __init__(self, clock: Clock, start: np.ndarray, advance_on_send: bool = False) -> None:
        self.embodiment = load_embodiment(CALIBRATION / "aloha_sim.yaml")
        self.clock = clock
        self.advance_on_send = advance_on_send  # each command takes one control period (a driver without pacing)
        self.position = np.array(start, dtype=np.float64)
        self.frame_stamp: float | None = None  # None: fresh every time
        self.state_stamp: float | None = None
        self.velocity: np.ndarray | None = None  # reported joint velocity; None: a robot that reports none
        self.cameras_on = True
        self.fault: str | None = None
        self.sent: list[np.ndarray] = []

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def now(self) -> float:
        return self.clock()

    def observe(self, cameras: bool | Sequence[str] = True) -> Observation:
        names = ("cam_high",) if cameras is True else tuple(cameras or ())
        stamp = self.clock() if self.frame_stamp is None else self.frame_stamp
        frames = {n: CameraFrame(np.zeros((8, 8, 3), np.uint8), stamp) for n in names} if self.cameras_on else {}
        state_stamp = self.clock() if self.state_stamp is None else self.state_stamp
        velocity = None if self.velocity is None else self.velocity.copy()
        return Observation(state_stamp, self.position.copy(), velocity, frames=frames, fault=self.fault)

    def send(self, result: FilterResult) -> np.ndarray:
        self.position = check_command(self.embodiment, result).copy()
        self.sent.append(self.position.copy())
        if self.advance_on_send:
            self.clock.t += self.embodiment.control_period_s
        return self.position.copy()


class ShiftingWorldModel:
    """Frame k of sample g: the newest input frame rolled k pixels right, plus noise seeded by (seed, g).

    `gate`, when given, makes every rollout wait for it (a generation that takes as long as a test wants);
    `calls` counts the rollouts it was asked for.
    Instruction "fail" raises and "bad shape" returns one frame too few: the two ways a model can fail a call.
    """

    def __init__(
        self,
        cameras: tuple[str, ...] = ("cam_high", "cam_left_wrist"),
        fps: float = 12.5,
        gate: threading.Event | None = None,
    ) -> None:
        self.model_id = "shifting:test"
        self.fps = fps
        self.cameras = cameras
        self.gate = gate
        self.calls = 0

    def rollout(self, request: RolloutRequest) -> Rollout:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if request.instruction == "fail":
            raise RuntimeError("the generator ran out of memory")
        horizon = request.horizon - (request.instruction == "bad shape")
        frames = {}
        for camera in self.cameras:
            newest = request.frames[camera][-1]
            samples = []
            for g in range(request.samples):
                noise = np.random.default_rng([request.seed, g]).integers(0, 8, (horizon, *newest.shape), np.uint8)
                samples.append(np.stack([np.roll(newest, k, axis=1) for k in range(horizon)]) + noise)
            frames[camera] = np.stack(samples)
        return Rollout(frames, self.fps, 0.0, self.model_id)
