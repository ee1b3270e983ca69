"""`LoopSettings`: how the autonomous loop runs (episode length, async or sync planning, the executor's curve,
retiming, the cap tracker, junction and receding horizon, planner timeouts, pacing, the executed-motion reward,
the observed-frame history of each plan request)."""

from __future__ import annotations

from dataclasses import dataclass

from eva_runtime.control.cap_tracker import CapTracker, checked_headroom
from eva_runtime.control.executor import PlanExecutor
from eva_runtime.control.gripper_latch import GripperLatch
from eva_runtime.reward import RewardConfig
from eva_runtime.safety.limits import SafetyLimits

__all__ = ["STREAM_ABOVE_HZ", "LoopSettings"]

STREAM_ABOVE_HZ = 50.0  # above this control rate a render no longer fits in a tick here (robots/sim_cameras.py)


@dataclass(frozen=True)
class LoopSettings:
    max_steps: int = 400
    synchronous: bool = False
    # Synchronous only: start each plan this far in, dropping its first seconds as an asynchronous loop drops the
    # latency it bridges, with the robot still held meanwhile. A diagnostic: it separates the two ways asynchronous
    # execution differs (later parts of each plan; a robot moving while planned for).
    synchronous_skip_s: float = 0.0
    # Asynchronous only: condition each plan on this many of the executing plan's imagined frames after the
    # observation (the motion the robot is committed to while the next plan is made) and start it after them,
    # instead of skipping the new plan's first second (the world model must be trained on observed + committed
    # history, e.g. 5 + 12 frames; docs/world_model.md). 0: off.
    committed_frames: int = 0
    execute_fraction: float = 1.0  # receding horizon: the share of each plan usable before the next one replaces it
    interpolation: str = "bspline"  # the curve through plan actions (executor.py): "bspline" (C2) or "linear"
    # Junction between plans. 0.5 s: with the oracle on 3 episodes, nominal interventions per joint-tick fell from
    # 15.5 % (0.2 s) to 11.1 %, success unchanged (docs/control.md).
    blend_s: float = 0.5
    # Retime each plan's curve to stay within this share of the joints' velocity and acceleration caps, the path
    # kept (control/retiming.py); None: play plans at the planner's rate and let the safety filter clamp.
    retime_headroom: float | None = None
    # Follow the executor's curve within this share of the velocity and acceleration caps before the safety filter
    # (control/cap_tracker.py), so the filter is a net rather than the smoother; None: the filter shapes it. 0.9:
    # nominal safety interventions 10 % -> 0.04 % of joint-ticks with the oracle (30/30 -> 29/30), 13 % -> 0.02 %
    # with the best learned model (13/50 both), executed executability higher in both (docs/control.md).
    track_headroom: float | None = 0.9
    # The reward that scores executed commands (control/executed_score.py) and its window in IDM frames; None: the
    # executed motion is not scored (run_episodes sets both from the deployment).
    executed_reward: RewardConfig | None = None
    executed_horizon: int = 37
    planner_timeout_s: float = 3.0
    initial_latency_s: float = 0.8  # first guess of observation-to-plan time, then a running estimate
    pace: bool = True  # real-time pacing; off only for tests of logic, never for timing claims
    cameras: tuple[str, ...] = ("cam_high",)
    # The simulated robot renders `cameras` on a thread of its own at their fps, as a real robot's cameras arrive
    # (robots/sim_cameras.py), instead of inside the tick that asks: a render (5-14 ms here) is longer than a
    # 200 Hz period. None: on for paced runs above 50 Hz only (`streams_cameras`), since every success rate in the
    # README was measured at 50 Hz with renders in the tick.
    stream_cameras: bool | None = None
    pause_gc: bool = True  # no garbage collection inside a paced episode (control/realtime.py)
    # Grippers open or closed with hysteresis (control/gripper_latch.py): (close_below, open_above) as fractions
    # of each gripper's range; None: the decoded openings as they are.
    gripper_latch: tuple[float, float] | None = None
    # Observed frames per plan request, spaced at the world model's fps (control/frame_history.py); a model trained
    # on K history frames needs K. None: the world model's own (the deployment reads it from the bundle; 1 for the
    # oracle, and 1 where no deployment sets it).
    history_frames: int | None = None
    history_fps: float = 12.5

    def __post_init__(self) -> None:
        skip, committed = self.synchronous_skip_s, self.committed_frames
        if not 0.0 <= skip <= 10.0:
            raise ValueError(f"synchronous_skip_s must be in [0, 10] s, got {skip}")
        if skip and not self.synchronous:
            raise ValueError(f"synchronous_skip_s needs synchronous planning, got {skip} s with asynchronous")
        if committed < 0:
            raise ValueError(f"committed_frames must be >= 0, got {committed}")
        if committed and self.synchronous:
            why = "a synchronous plan starts at rest"
            raise ValueError(f"committed_frames is for asynchronous planning ({why}), got {committed}")
        if self.track_headroom is not None:  # refused here, not first when a loop is built from these settings
            checked_headroom(self.track_headroom, "track_headroom (None: no tracker)")
        if self.stream_cameras and not self.pace:  # unpaced, simulated time outruns a camera thread's renders
            raise ValueError("stream_cameras needs real-time pacing (pace=True)")

    def streams_cameras(self, control_rate_hz: float) -> bool:
        """Whether the simulated cameras render on their own thread at this control rate."""
        if self.stream_cameras is None:
            return self.pace and control_rate_hz > STREAM_ABOVE_HZ
        return self.stream_cameras

    def tracker(self, limits: SafetyLimits) -> CapTracker | None:
        """The tracker between the executor and the safety filter, if these settings ask for one."""
        return None if self.track_headroom is None else CapTracker(limits, self.track_headroom)

    def executor(self, limits: SafetyLimits) -> PlanExecutor:
        """The plan executor these settings describe, retiming against the safety filter's own caps."""
        headroom = self.retime_headroom
        return PlanExecutor(
            blend_s=self.blend_s,
            execute_fraction=self.execute_fraction,
            interpolation=self.interpolation,
            caps=None if headroom is None else (limits.velocity_max, limits.acceleration_max),
            headroom=0.8 if headroom is None else headroom,
            gripper_latch=None if self.gripper_latch is None else GripperLatch.for_limits(limits, *self.gripper_latch),
        )
