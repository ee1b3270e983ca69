"""OracleWorldModel: a TEST INSTRUMENT, not a model. It cheats by reading the simulator state.

Given the live simulation's state (a snapshot, the episode step and the safety filter's state), it restores a
private copy of the simulation and runs the scripted expert forward through the same safety filter, rendering
the true future frames at the world-model fps. Each camera renders at its own size (the embodiment's) and is
shrunk to the IDM's with area interpolation, as recorded episodes are for training: rendering straight at 64x64
gives aliased edges (27.9 dB against the shrunk render of the same scene) that no training frame has.

It is the upper bound a learned world model is compared against, and, with
:class:`~eva_runtime.world_model.artifacts.ArtifactConfig`, a fault injector that emulates an unaligned generator
(jitter, dropped/repeated frames, temporal jumps, pixel noise).

It also returns the commands the expert sent at each frame time, the ground truth an IDM should decode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from eva_runtime.embodiment import Embodiment
from eva_runtime.idm.windows import resize_video
from eva_runtime.safety import FilterState, SafetyFilter
from eva_runtime.sim.bimanual_sim import BimanualSim, SimSnapshot, steps_per_frame
from eva_runtime.world_model.artifacts import ArtifactConfig, inject_artifacts
from eva_runtime.world_model.protocol import Rollout, RolloutRequest

__all__ = ["OracleRollout", "OracleState", "OracleWorldModel", "RejoinedFuture", "render_shrunk", "render_sizes"]


@dataclass(frozen=True)
class OracleState:
    """What the oracle needs to know about the live episode (the control loop has all of it)."""

    snapshot: SimSnapshot
    step: int  # control steps since the episode started
    filter_state: FilterState

    def to_wire(self) -> dict:
        """Plain arrays and numbers (msgpack-able): how the state crosses into the planner process."""
        f = self.filter_state
        return {
            "sim_state": self.snapshot.state,
            "sim_time": self.snapshot.time,
            "step": self.step,
            "filter": {
                "time": f.time,
                "command": f.command,
                "velocity": f.velocity,
                "target": f.target,
                "fault": f.fault,
            },
        }

    @classmethod
    def from_wire(cls, data: dict) -> OracleState:
        f = data["filter"]
        filter_state = FilterState(f["time"], f["command"], f["velocity"], f["target"], f["fault"])
        return cls(SimSnapshot(data["sim_state"], data["sim_time"]), int(data["step"]), filter_state)


@dataclass(frozen=True)
class OracleRollout(Rollout):
    actions: np.ndarray | None = None  # (horizon, dof) command in force at each frame (frame 0: the last one)


@dataclass(frozen=True)
class RejoinedFuture:
    frames: dict[str, np.ndarray]  # camera -> (horizon, h, w, 3)
    actions: np.ndarray  # (horizon, dof)
    joined_step: int  # where the expert joined its script
    stage_start: int  # the task's stage at the state, and at the future's end
    stage_end: int
    reach_end_m: float  # the right gripper's distance to the object at the end


def render_sizes(embodiment: Embodiment, cameras: tuple[str, ...], what: str = "cameras") -> dict[str, tuple[int, int]]:
    """Each camera's (height, width) as the embodiment renders it; ValueError naming the cameras it lacks."""
    specs = {camera.name: camera for camera in embodiment.cameras}
    missing = [name for name in cameras if name not in specs]
    if missing:
        raise ValueError(f"{what} {missing} are not in embodiment {embodiment.name!r}")
    return {name: (specs[name].height, specs[name].width) for name in cameras}


def render_shrunk(sim: BimanualSim, camera: str, render_size: tuple[int, int], image_size) -> np.ndarray:
    """One camera's frame rendered at its own size and shrunk to `image_size` with area interpolation, as recorded
    episodes are for training (module docstring: rendering straight at the small size aliases)."""
    rendered = sim.render((camera,), *render_size)[camera]
    return resize_video(rendered[None], tuple(image_size))[0]


class OracleWorldModel:
    def __init__(
        self,
        task: str,
        embodiment: Embodiment,
        fps: float,
        cameras: tuple[str, ...] = ("cam_high",),
        image_size: tuple[int, int] = (64, 64),
        artifacts: ArtifactConfig | None = None,
    ) -> None:
        stride = steps_per_frame(embodiment.control_rate_hz, fps, "oracle fps")
        self.task = task
        self.embodiment = embodiment
        self.fps = float(fps)
        self.stride = stride
        self.cameras = cameras
        self.image_size = image_size
        self._render_sizes = render_sizes(embodiment, cameras, "oracle cameras")
        self.artifacts = artifacts or ArtifactConfig()
        self.model_id = f"oracle:{task}" + (":artifacts" if self.artifacts.active else "")
        self._sim: BimanualSim | None = None

    def _simulation(self) -> BimanualSim:
        if self._sim is None:
            self._sim = BimanualSim(self.task, self.embodiment.control_rate_hz)
        return self._sim

    def warm_up(self) -> None:
        """Build the private simulation and its renderer now (both cost seconds the first time)."""
        sim = self._simulation()
        for name, size in self._render_sizes.items():
            sim.render((name,), *size)

    def imagine(self, state: OracleState, horizon: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """True future frames (camera -> (horizon, h, w, 3)) and commands (horizon, dof), no artifacts."""
        sim = self._simulation()
        sim.restore(state.snapshot)
        return self._play(sim, state, state.step, horizon)

    def imagine_rejoined(self, state: OracleState, horizon: int) -> RejoinedFuture:
        """The expert's future from a state a policy produced, the label a DAgger clip needs: the expert joins its
        script where the state is (`sim.experts.join_candidates`), trying each candidate in order and keeping
        the first whose future gets further in the task (the furthest one when none does)."""
        from eva_runtime.sim.experts import join_candidates
        from eva_runtime.sim.tasks import task_spec

        sim = self._simulation()
        spec = task_spec(self.task)
        sim.restore(state.snapshot)
        stage_start, candidates = spec.stage(sim), join_candidates(self.task, sim, state.step)
        best: RejoinedFuture | None = None
        for joined in candidates:
            sim.restore(state.snapshot)
            frames, actions = self._play(sim, state, joined, horizon)
            future = RejoinedFuture(frames, actions, joined, stage_start, spec.stage(sim), spec.reach_distance(sim))
            if best is None or future.stage_end > best.stage_end:
                best = future
            if best.stage_end > stage_start:
                break
        assert best is not None  # join_candidates always gives at least one
        return best

    def _play(
        self, sim: BimanualSim, state: OracleState, start_step: int, horizon: int
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Run the expert from the restored `sim`, joining its script at `start_step`, rendering every frame."""
        from eva_runtime.sim.experts import make_expert

        safety = SafetyFilter.for_embodiment(self.embodiment)
        safety.restore(state.filter_state)  # continue the live filter exactly, velocity included
        expert = make_expert(self.task, sim, start_step=start_step, start_command=state.filter_state.command)
        height, width = self.image_size
        frames = {name: np.empty((horizon, height, width, 3), dtype=np.uint8) for name in self.cameras}
        actions = np.empty((horizon, self.embodiment.dof))
        step = start_step
        for k in range(horizon):
            if k > 0:
                for _ in range(self.stride):
                    result = safety.step(sim.time + sim.control_period_s, expert(sim, step), sim.joint_positions())
                    sim.apply(result.command)
                    step += 1
            actions[k] = safety.state.command
            for name, size in self._render_sizes.items():
                frames[name][k] = render_shrunk(sim, name, size, self.image_size)
        return frames, actions

    def rollout(self, request: RolloutRequest) -> OracleRollout:
        state = request.privileged_state
        if isinstance(state, dict):
            state = OracleState.from_wire(state)  # it came through the planner process
        if not isinstance(state, OracleState):
            raise TypeError("the oracle world model needs RolloutRequest.privileged_state = OracleState(...)")
        began = time.perf_counter()
        clean, actions = self.imagine(state, request.horizon)
        frames = {}
        for name, video in clean.items():
            samples = []
            for g in range(request.samples):
                # Seeded by (request, sample) only, so every camera of a sample shows the same glitches.
                rng = np.random.default_rng([request.seed, g])
                samples.append(inject_artifacts(video, self.artifacts, rng))
            frames[name] = np.stack(samples)
        return OracleRollout(frames, self.fps, time.perf_counter() - began, self.model_id, actions)

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None
