"""Short recorded episodes for the tests that read recordings back (`test_mcap_recording`, `test_episode_view`,
the Foxglove layout and live-view tests): the control loop on simulated time with a fake robot whose cameras
give noise, and an in-process planner whose plans carry imagined frames of a known, distinct grey level each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eva_runtime.control.autonomous_loop import AutonomousLoop, LoopSettings
from eva_runtime.control.executor import Plan
from eva_runtime.control.modes import Trigger
from eva_runtime.control.planner import PlanOutcome, PlanRequest
from eva_runtime.control.planner_port import InProcessPlanner
from eva_runtime.embodiment import load_embodiment
from eva_runtime.records.episode_recording import EpisodeRecording
from eva_runtime.records.outcome_log import OutcomeLog
from eva_runtime.robots.interface import CameraFrame, Observation
from eva_runtime.safety import SafetyLimits
from tests.conftest import CALIBRATION
from tests.fakes import Clock, FakeRobot

EMBODIMENT = load_embodiment(CALIBRATION / "aloha_sim.yaml")
LIMITS = SafetyLimits.from_embodiment(EMBODIMENT)


class CameraRobot(FakeRobot):
    """The fake robot with camera frames of the embodiment's configured size (noise, stamped on the clock)."""

    def observe(self, cameras=True) -> Observation:
        observation = super().observe(cameras=False)
        names = [c.name for c in EMBODIMENT.cameras] if cameras is True else list(cameras or ())
        sizes = {c.name: (c.height, c.width) for c in EMBODIMENT.cameras}
        rng = np.random.default_rng(int(self.clock() * 1000))
        frames = {n: CameraFrame(rng.integers(0, 255, (*sizes[n], 3), np.uint8), self.clock()) for n in names}
        return Observation(observation.stamp, observation.joint_position, frames=frames)


def imagining_planner(clock: Clock, robot: FakeRobot) -> InProcessPlanner:
    """Plans that drift every joint slowly, with 4 imagined cam_high frames (64x64) sent back with each: frame k
    of a plan is a uniform grey, 50 levels apart from the previous plan's and 12 from the plan's frame k - 1, so
    a viewer can tell which plan and which frame it shows even through JPEG and a GIF palette."""

    def plan(request: PlanRequest) -> PlanOutcome:
        actions = robot.position + np.arange(37)[:, None] * 0.002
        greys = 30 + (request.seed % 4) * 50 + 12 * np.arange(4)
        imagined = {"cam_high": np.broadcast_to(greys[:, None, None, None], (4, 64, 64, 3)).astype(np.uint8)}
        made = Plan(request.time, 12.5, actions, "drift", 0.75, 0.3, 1, {"rollout": imagined})
        return PlanOutcome(made, (0.75,), 0.3)

    return InProcessPlanner(plan, clock, 0.3)


def record_an_episode(tmp_path: Path, ticks: int = 320, sinks: Sequence = ()) -> tuple[dict, list, Path]:
    """Run the loop for `ticks` with a recording (and live `sinks`) and an ESTOP and release in the middle;
    returns the outcome log's recording entry, the tick results and the log path."""
    clock = Clock()
    robot = CameraRobot(clock, (LIMITS.soft_low + LIMITS.soft_high) / 2)
    loop = AutonomousLoop(robot, imagining_planner(clock, robot), LoopSettings(pace=False), clock=clock)
    loop.instruction = "move"
    loop.start(seed=1)
    recording = EpisodeRecording(tmp_path / "recordings", robot, (64, 64), 12.5, sinks=sinks)
    log_path = tmp_path / "outcomes.db"
    results = []
    with OutcomeLog(log_path) as log:
        episode = log.start_episode("drift", "move", "seen", EMBODIMENT.name, {}, "drift", "test")
        recording.begin(log.run_id, episode)
        for step in range(ticks):
            if step == ticks - 40:
                loop.command(Trigger.OPERATOR_ESTOP)
            if step == ticks - 30:
                loop.command(Trigger.OPERATOR_RELEASE)
            result = loop.tick()
            recording.tick(result)
            results.append(result)
            clock.t += loop.period
        summary = recording.end(log, episode)
        entry = log.recording(episode)
    assert summary is not None and entry == summary.as_dict()
    return entry, results, log_path
