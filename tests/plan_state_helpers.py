"""A plan-state capture from the real control loop on the simulated robot, for the tests that train or evaluate
from a model's own closed-loop states (DAgger labels, alignment from captured states)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eva_runtime.control.autonomous_loop import AutonomousLoop, LoopSettings
from eva_runtime.control.plan_states import PlanStateCapture
from eva_runtime.control.planner import Plan, PlanOutcome, PlanRequest
from eva_runtime.control.planner_port import InProcessPlanner
from eva_runtime.embodiment import Embodiment
from eva_runtime.robots.mujoco_robot import MujocoRobot


def capture_hold_states(
    embodiment: Embodiment,
    path: Path,
    *,
    seed: int,
    ticks: int = 200,
    history_frames: int = 5,
    image_size: tuple[int, int] = (64, 64),
    sent: list | None = None,
) -> str:
    """`ticks` of the loop with a planner that holds the arms where they are, every request captured into `path`;
    `sent` collects the privileged state each request reached the planner with. Returns the file's SHA-256."""
    robot = MujocoRobot(embodiment, "transfer_cube")
    robot.connect()
    robot.reset_episode(seed)

    def hold(request: PlanRequest) -> PlanOutcome:
        if sent is not None:
            sent.append(request.privileged_state)
        here = np.repeat(robot.sim.joint_positions()[None], 37, axis=0)
        return PlanOutcome(Plan(request.time, 12.5, here, "hold", 1.0), (1.0,), 0.1)

    meta = {"task": "transfer_cube", "instruction": robot.instruction, "fps": 12.5}
    capture = PlanStateCapture("cam_high", image_size, meta)
    planner = capture.wrap(InProcessPlanner(hold, robot.now, 0.1))
    settings = LoopSettings(pace=False, history_frames=history_frames)
    loop = AutonomousLoop(robot, planner, settings, privileged=capture.source(robot), clock=robot.now)
    try:
        loop.start(seed)
        for _ in range(ticks):
            loop.tick()
    finally:
        robot.disconnect()
    return capture.save(path)
