"""What the policy node publishes for the operator: ~/mode, ~/status, ~/plan, ~/rollout and /diagnostics.

A mixin of :class:`~eva_runtime.ros.policy_node.PolicyNode` (it reads the node's runtime under its lock).
`~/rollout` shows the imagined frames when the planner sends them back with a plan (`plan.metadata["rollout"]`:
camera -> frames); until then it shows the frames the plan was made from.
"""

from __future__ import annotations

import functools
import json
import time
from typing import TYPE_CHECKING

import numpy as np
from std_msgs.msg import String

from eva_runtime.control.episode_runner import TickResult, episode_counters
from eva_runtime.ros.diagnostics import PolicySnapshot, build_diagnostics
from eva_runtime.ros.messages import plan_to_trajectory, rgb_to_image, tile_frames
from eva_runtime.ros.parameters import read

if TYPE_CHECKING:
    from eva_runtime.ros.policy_setup import PolicyRuntime

__all__ = ["ROLLOUT_COLUMNS", "PolicyReports", "never_raises"]

ROLLOUT_COLUMNS = 8  # frames per camera in the ~/rollout tile


def never_raises(callback):
    """A timer callback that logs its exception: escaping a callback, it would end the executor's spin, and with it
    the control tick's commands. A report is never worth that."""

    @functools.wraps(callback)
    def guarded(self, *args, **kwargs):
        try:
            return callback(self, *args, **kwargs)
        except Exception as error:
            message = f"{callback.__name__} failed: {type(error).__name__}: {error}"
            self.get_logger().error(message, throttle_duration_sec=5.0)
            return None

    return guarded


class PolicyReports:
    """Publishers' callbacks of the policy node (mixed into it)."""

    def _publish_plan(self, runtime: PolicyRuntime, tick: TickResult) -> None:
        if tick.submitted is not None:
            request_id, request = tick.submitted
            self._request_frames = {request_id: {n: np.asarray(f)[-1] for n, f in request.frames.items()}}
        if tick.installed is None:
            return
        request_id, plan = tick.installed
        joint_names = runtime.robot.embodiment.joint_names
        trajectory = plan_to_trajectory(plan, joint_names)
        trajectory.header.stamp = runtime.robot.to_stamp(plan.start_time)
        runtime.publishers["plan"].publish(trajectory)
        # The imagined future when the planner sends it back (plan.metadata["rollout"]: camera -> frames);
        # until then the frames the plan was made from.
        rollout = plan.metadata.get("rollout")
        if rollout:
            rows = []
            for frames in rollout.values():
                frames = np.asarray(frames)
                picks = np.linspace(0, len(frames) - 1, min(ROLLOUT_COLUMNS, len(frames))).round().astype(int)
                rows.append([frames[i] for i in picks])
        else:
            conditioning = self._request_frames.get(request_id, {})
            rows = [list(conditioning.values())] if conditioning else []
        if rows:
            image = rgb_to_image(tile_frames(rows), 0.0)
            image.header.stamp = runtime.robot.to_stamp(plan.start_time)
            runtime.publishers["rollout"].publish(image)

    def _publish_mode(self) -> None:
        """Publish the mode when it changed (transient local: a late subscriber still gets the current one)."""
        runtime = self._runtime
        if runtime is None or "mode" not in runtime.publishers:
            return
        mode = runtime.loop.modes.mode.value
        if mode != self._published_mode:
            runtime.publishers["mode"].publish(String(data=mode))
            self._published_mode = mode

    def snapshot(self) -> PolicySnapshot | None:
        with self._lock:
            runtime = self._runtime
            if runtime is None:
                return None
            loop, robot = runtime.loop, runtime.robot
            now = robot.now()
            stats = loop.stats
            rejected, last = robot.rejections()
            if self._privileged_rejected:
                rejected[str(read(self, "topics.privileged_state"))] = self._privileged_rejected
            total = sum(rejected.values())
            new, self._reported_rejections = total - self._reported_rejections, total
            periods = np.array(self._periods) if self._periods else np.array([np.nan])
            latencies = stats.latencies_s
            return PolicySnapshot(
                stamp=now,
                hardware_id=robot.embodiment.name,
                mode=loop.modes.mode.value,
                lifecycle="active" if self._active else "inactive",
                homing=loop.homing,
                planner_alive=runtime.planner.alive,
                planner_ready=runtime.planner.ready,
                model_id=runtime.model_id,
                plans=stats.plans,
                rejected=stats.rejected,
                planner_faults=stats.planner_faults,
                plan_age_s=stats.plan_age_s,
                latency_last_s=latencies[-1] if latencies else float("nan"),
                latency_p50_s=float(np.median(latencies)) if latencies else float("nan"),
                frame_ages_s=robot.frame_ages(now),
                frame_timeout_s=loop.frame_timeout,
                state_ages_s=robot.state_ages(now),
                state_timeout_s=loop.state_timeout,
                fault=loop.safety.fault,
                interventions=dict(self._interventions),
                rejected_messages=rejected,
                new_rejections=new,
                last_rejection=last,
                tick_period_p50_s=float(np.median(periods)),
                tick_period_max_s=float(np.max(periods)),
                overruns=self._overruns,
                teleop_unavailable=runtime.topics.leader_unavailable,
                episode_id=runtime.session.episode_id,
                held_command_failures=runtime.held.failures if runtime.held is not None else 0,
                held_command_error=runtime.held.last_error if runtime.held is not None else "",
                expired_plans=stats.expired_plans,
            )

    @staticmethod
    def _stale_inputs(runtime: PolicyRuntime) -> list[str]:
        """The inputs older than their timeouts now (any of them keeps an automatic HOLD from ending)."""
        robot, loop = runtime.robot, runtime.loop
        now = robot.now()
        stale = [name for name, age in robot.frame_ages(now).items() if not age <= loop.frame_timeout]
        stale += [f"joint_state.{arm}" for arm, age in robot.state_ages(now).items() if not age <= loop.state_timeout]
        return sorted(stale)

    @never_raises
    def _publish_diagnostics(self) -> None:
        if not self.context.ok():
            return
        snapshot = self.snapshot()
        runtime = self._runtime
        if snapshot is None or runtime is None:
            return
        array = build_diagnostics(self.get_name(), snapshot)
        array.header.stamp = self.get_clock().now().to_msg()
        runtime.publishers["diagnostics"].publish(array)
        with self._lock:
            period = float(read(self, "log_update_period_s"))
            if runtime.session.running and time.monotonic() - self._last_log_update >= period:
                runtime.session.update(episode_counters(runtime.loop.stats, runtime.loop.period))
                self._last_log_update = time.monotonic()

    @never_raises
    def _publish_status(self) -> None:
        with self._lock:
            runtime = self._runtime
            if runtime is None or not self.context.ok():
                return
            loop = runtime.loop
            stats = loop.stats
            status = {
                "mode": loop.modes.mode.value,
                "mode_reason": self._mode_reason,  # the trigger and detail of the last change of mode
                "active": self._active,
                "homing": loop.homing,
                "episode_id": runtime.session.episode_id,
                "step": loop.step,
                "plans": stats.plans,
                "rejected": stats.rejected,
                "expired_plans": stats.expired_plans,
                "hold_ticks": stats.hold_ticks,
                "plan_age_s": None if np.isnan(stats.plan_age_s) else round(stats.plan_age_s, 3),
                "planner_latency_s": round(stats.latencies_s[-1], 3) if stats.latencies_s else None,
                "interventions": dict(stats.interventions),
                "instruction": loop.instruction,
                "stale_inputs": self._stale_inputs(runtime),
                "last_reseed": _reseed_summary(loop.safety.last_reseed, loop.robot.now()),
            }
            runtime.publishers["status"].publish(String(data=json.dumps(status)))


def _reseed_summary(reseed: tuple[float, np.ndarray, np.ndarray] | None, now: float) -> dict | None:
    """The newest re-seed of the safety filter: how long ago, the reading it started from and the seed (rad)."""
    if reseed is None:
        return None
    stamp, measured, seed = reseed
    return {
        "age_s": round(now - stamp, 3),
        "measured": [round(float(x), 4) for x in measured],
        "seed": [round(float(x), 4) for x in seed],
    }
