"""The states a learned model's own plans lead to, captured at each plan request (simulation only; for DAgger).

A world model trained on demonstrations sees the expert's states; in closed loop it plans from the states its
own earlier plans left (a hand a centimetre off, a cube nudged), and that is where it loses the task
(docs/world_model.md). To train on those states, `PlanStateCapture` sits between the control loop and the
planner: at every request it keeps the frames the model was given (shrunk to the model's size, as the planner
shrinks them) and the simulator's and safety filter's exact state, which a labeller later continues with the
scripted expert (`training/dagger_labels.py`). The privileged state never reaches the learned model: the
request is forwarded without it. Saved as one safetensors file (arrays, JSON metadata; no pickle).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.atomic_file import replaced_atomically
from eva_runtime.control.planner import PlanOutcome, PlanRequest, episode_seed_of
from eva_runtime.control.planner_port import PlannerPort
from eva_runtime.file_hash import file_sha256
from eva_runtime.idm.windows import resize_video

__all__ = ["CapturedStates", "PlanStateCapture", "load_captured_states"]

FORMAT = "eva-runtime/plan-states-v1"


@dataclass(frozen=True)
class CapturedStates:
    """Every captured request, row i of each array for request i."""

    frames: np.ndarray  # (N, K, H, W, 3) uint8: the observed frames the model conditioned on, oldest first
    sim_state: np.ndarray  # (N, S) the simulator's full integration state
    sim_time: np.ndarray  # (N,)
    step: np.ndarray  # (N,) ticks executed under a plan (the oracle's script position)
    filter_time: np.ndarray  # (N,)
    filter_command: np.ndarray  # (N, dof)
    filter_velocity: np.ndarray  # (N, dof)
    filter_target: np.ndarray  # (N, dof)
    seed: np.ndarray  # (N,) the episode's seed
    metadata: dict

    def __len__(self) -> int:
        return len(self.frames)

    def oracle_state(self, i: int):
        """Row i as the oracle's state (what `OracleWorldModel.imagine` continues from)."""
        from eva_runtime.safety import FilterState
        from eva_runtime.sim.bimanual_sim import SimSnapshot
        from eva_runtime.world_model.oracle import OracleState

        filter_state = FilterState(
            float(self.filter_time[i]),
            self.filter_command[i].copy(),
            self.filter_velocity[i].copy(),
            self.filter_target[i].copy(),
            None,
        )
        snapshot = SimSnapshot(self.sim_state[i].copy(), float(self.sim_time[i]))
        return OracleState(snapshot, int(self.step[i]), filter_state)


class PlanStateCapture:
    """Keeps (frames, simulator and filter state) of every plan request a wrapped planner is sent."""

    def __init__(self, camera: str, image_size: tuple[int, int], metadata: dict | None = None) -> None:
        self.camera, self.image_size = camera, tuple(image_size)
        self.metadata = dict(metadata or {})
        self._rows: list[dict] = []

    def __len__(self) -> int:
        return len(self._rows)

    def source(self, robot) -> Callable[[int, object], object]:
        """The loop's privileged source: the simulator's state at each request (never sent to the model)."""
        from eva_runtime.control.sim_runtime import oracle_state_source
        from eva_runtime.robots.mujoco_robot import MujocoRobot

        if not isinstance(robot, MujocoRobot):
            raise ValueError("plan states can only be captured from the simulated robot (they need its state)")
        return oracle_state_source(robot)

    def wrap(self, planner: PlannerPort) -> PlannerPort:
        return _CapturingPlanner(planner, self)

    def keep(self, request: PlanRequest, state) -> None:
        if state is None:
            raise ValueError("a plan request without the simulator's state: the loop was given no state source")
        if self.camera not in request.frames:
            raise ValueError(f"plan request without camera {self.camera!r} (has {sorted(request.frames)})")
        frames = resize_video(np.asarray(request.frames[self.camera]), self.image_size)
        f = state.filter_state
        self._rows.append(
            {
                "frames": frames.astype(np.uint8),
                "sim_state": np.asarray(state.snapshot.state, np.float64),
                "sim_time": np.float64(state.snapshot.time),
                "step": np.int64(state.step),
                "filter_time": np.float64(f.time),
                "filter_command": np.asarray(f.command, np.float64),
                "filter_velocity": np.asarray(f.velocity, np.float64),
                "filter_target": np.asarray(f.target, np.float64),
                "seed": np.int64(episode_seed_of(request.seed)),
            }
        )

    def save(self, path: Path | str) -> str:
        """Write every kept request (through a temporary file); returns the file's SHA-256."""
        from safetensors.numpy import save_file

        if not self._rows:
            raise ValueError("no plan request was captured: nothing to save")
        arrays = {key: np.ascontiguousarray(np.stack([row[key] for row in self._rows])) for key in self._rows[0]}
        metadata = {"format": FORMAT, "camera": self.camera, "image_size": list(self.image_size), **self.metadata}
        with replaced_atomically(path) as temporary:
            save_file(arrays, str(temporary), metadata={"eva": json.dumps(metadata)})
        return file_sha256(path)


class _CapturingPlanner:
    """A planner port that keeps each request's state and forwards the request without it."""

    def __init__(self, inner: PlannerPort, capture: PlanStateCapture) -> None:
        self.inner, self.capture = inner, capture

    @property
    def ready(self) -> bool:
        return self.inner.ready

    @property
    def alive(self) -> bool:
        return self.inner.alive

    def submit(self, request_id: int, request: PlanRequest) -> bool:
        state = request.privileged_state
        sent = self.inner.submit(request_id, dataclasses.replace(request, privileged_state=None))
        if sent:
            self.capture.keep(request, state)
        return sent

    def poll(self) -> tuple[int, PlanOutcome] | None:
        return self.inner.poll()


def load_captured_states(path: Path | str) -> CapturedStates:
    """Read a capture; refused when it is not one (format) or its arrays disagree in length."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    with safe_open(str(path), framework="np") as handle:
        metadata = json.loads((handle.metadata() or {}).get("eva", "{}"))
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a plan-state capture (format {metadata.get('format')!r}, want {FORMAT})")
    arrays = load_file(str(path))
    fields = [f.name for f in dataclasses.fields(CapturedStates) if f.name != "metadata"]
    missing = [name for name in fields if name not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    lengths = {name: len(arrays[name]) for name in fields}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{path}: arrays of different lengths {lengths}")
    return CapturedStates(**{name: arrays[name] for name in fields}, metadata=metadata)
