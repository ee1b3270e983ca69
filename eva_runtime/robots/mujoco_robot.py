"""MujocoRobot: the simulated bimanual robot behind RobotInterface, plus the episode controls only a simulation has.

`send` advances the simulation by one control period (20 ms) while holding the command, so the robot clock is
simulation time and runs as fast as the machine allows. Cameras render at the sizes in the embodiment file.
After every period the task's stage and the gripper's distance to the object are checked, so an episode keeps the
furthest stage it reached and its closest approach (a failure that grasped and dropped is told from one that never
reached, and one that stopped 2 cm short from one that stopped 10 cm short).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eva_runtime.embodiment import Embodiment
from eva_runtime.robots.interface import CameraFrame, Observation, RobotError, RobotInterface, check_command
from eva_runtime.safety import FilterResult

__all__ = ["MujocoRobot"]


class MujocoRobot(RobotInterface):
    def __init__(self, embodiment: Embodiment, task: str, streamed_cameras: Sequence[str] = ()) -> None:
        """`streamed_cameras`: cameras rendered on a thread of their own at their fps, as a real robot's arrive
        (robots/sim_cameras.py; for real-time runs whose period is shorter than a render); the others render
        when observed, inside the caller's tick."""
        self.embodiment = embodiment
        self.task_name = task
        known = {camera.name: camera for camera in embodiment.cameras}
        unknown = [name for name in streamed_cameras if name not in known]
        if unknown:
            raise RobotError(f"unknown camera(s) {unknown} to stream; this robot has {list(known)}")
        self._streamed = tuple(known[name] for name in dict.fromkeys(streamed_cameras))
        self._cameras = None  # StreamingCameras, while connected
        self._sim = None
        self._task = None
        self._furthest = 0
        self._closest = float("inf")

    def connect(self) -> None:
        from eva_runtime.sim.bimanual_sim import BimanualSim
        from eva_runtime.sim.tasks import task_spec

        self._task = task_spec(self.task_name)
        self._sim = BimanualSim(self.task_name, self.embodiment.control_rate_hz)
        period = self._sim.control_period_s
        if abs(period - self.embodiment.control_period_s) > 1e-9:
            raise RobotError(
                f"embodiment {self.embodiment.name!r} runs at {self.embodiment.control_rate_hz} Hz but the simulation "
                f"steps {1 / period:g} Hz"
            )
        if self._streamed:
            from eva_runtime.robots.sim_cameras import StreamingCameras

            self._cameras = StreamingCameras(self._sim, self._streamed)

    @property
    def sim(self):
        """The simulation itself, for privileged users only (scripted experts, the oracle world model, tests)."""
        if self._sim is None:
            raise RobotError("the simulated robot is not connected")
        return self._sim

    @property
    def instruction(self) -> str:
        return self._task.instruction if self._task else ""

    def reset_episode(self, seed: int, pose: np.ndarray | None = None) -> None:
        from eva_runtime.sim.bimanual_sim import START_POSE

        self.sim.reset(START_POSE if pose is None else pose, self._task.sample_objects(seed))
        self._furthest = 0
        self._closest = float("inf")
        if self._cameras is not None:
            self._cameras.restart()

    def success(self) -> bool:
        return self._task.success(self.sim)

    @property
    def stages(self) -> tuple[str, ...]:
        return self._task.stages if self._task else ()

    def furthest_stage(self) -> int:
        return self._furthest

    def closest_reach_m(self) -> float | None:
        return None if self._closest == float("inf") else self._closest

    def now(self) -> float:
        return self.sim.time

    def observe(self, cameras: bool | Sequence[str] = True) -> Observation:
        sim = self.sim
        stamp = sim.time
        known = {spec.name: spec for spec in self.embodiment.cameras}
        wanted = list(known) if cameras is True else [] if cameras is False else list(cameras)
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise RobotError(f"unknown camera(s) {unknown}; this robot has {list(known)}")
        frames = self._cameras.latest(wanted) if self._cameras is not None else {}
        for name in wanted:
            if name in frames or name in self._cameras_streamed():
                continue
            spec = known[name]
            frames[name] = CameraFrame(sim.render((name,), spec.height, spec.width)[name], stamp)
        return Observation(
            stamp, sim.joint_positions(), sim.joint_velocities(), frames, joint_effort=sim.joint_efforts()
        )

    def send(self, result: FilterResult) -> np.ndarray:
        command = check_command(self.embodiment, result)
        self.sim.apply(command)
        if self._cameras is not None:
            self._cameras.after_step(self.sim.time)
        self._furthest = max(self._furthest, self._task.stage(self.sim))
        self._closest = min(self._closest, self._task.reach_distance(self.sim))
        return command.copy()

    def _cameras_streamed(self) -> tuple[str, ...]:
        return self._cameras.names if self._cameras is not None else ()

    def disconnect(self) -> None:
        if self._cameras is not None:
            self._cameras.close()
            self._cameras = None
        if self._sim is not None:
            self._sim.close()
        self._sim = None
