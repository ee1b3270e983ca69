"""Benchmark: the 50 Hz control loop while the planner process is busy, async vs sync, in one run.

Runs N real-time-paced transfer-cube episodes per mode with the shipped bundle (oracle world model + IDM) and
prints one JSON object per mode: tick period jitter |period - 20 ms| (p50 / p99 / max), missed deadlines per
1,000 ticks, work per tick (p50 / p99), the share of ticks the robot held (idle), the first-frame-to-first-
planned-command latency (median over episodes), and the async/sync ratios of idle share and first-command time.

    MUJOCO_GL=egl .venv/bin/python bench/control_loop.py [--episodes 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from eva_runtime.bundle import load_bundle
from eva_runtime.control.episode_runner import LoopSettings, run_autonomous_episode
from eva_runtime.control.planner_process import PlannerProcess
from eva_runtime.control.sim_runtime import oracle_state_source, planner_spec
from eva_runtime.robots.mujoco_robot import MujocoRobot

ROOT = Path(__file__).resolve().parents[1]


def measure(bundle, synchronous: bool, episodes: int) -> dict[str, float]:
    robot = MujocoRobot(bundle.embodiment, "transfer_cube")
    robot.connect()
    planner = PlannerProcess(planner_spec(bundle, "transfer_cube"))
    planner.start()
    stats = [
        run_autonomous_episode(
            robot, planner, 5000 + i, LoopSettings(synchronous=synchronous), oracle_state_source(robot)
        )
        for i in range(episodes)
    ]
    planner.close()
    robot.disconnect()
    period = robot.embodiment.control_period_s
    jitter = np.abs(np.concatenate([s.periods_s for s in stats]) - period) * 1e3
    work = np.concatenate([s.work_s for s in stats]) * 1e3
    ticks = sum(s.steps for s in stats)
    first = [s.first_command_s for s in stats if s.first_command_s is not None]
    return {
        "episodes": episodes,
        "successes": sum(s.success for s in stats),
        "jitter_ms_p50": round(float(np.percentile(jitter, 50)), 3),
        "jitter_ms_p99": round(float(np.percentile(jitter, 99)), 3),
        "jitter_ms_max": round(float(jitter.max()), 3),
        "missed_deadlines_per_1000_ticks": round(1000 * sum(s.overruns for s in stats) / ticks, 2),
        "work_ms_p50": round(float(np.percentile(work, 50)), 3),
        "work_ms_p99": round(float(np.percentile(work, 99)), 3),
        "idle_share": round(sum(s.hold_ticks for s in stats) / ticks, 3),
        "first_command_s_median": round(float(np.median(first)), 3) if first else None,
        "planning_latency_s_p50": round(float(np.median([x for s in stats for x in s.latencies_s])), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "models/bundle_transfer_cube")
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    results = {"async": measure(bundle, False, args.episodes), "sync": measure(bundle, True, args.episodes)}
    results["ratios_async_over_sync"] = {
        key: round(results["async"][key] / results["sync"][key], 2)
        for key in ("idle_share", "first_command_s_median", "work_ms_p50")
        if results["sync"][key]
    }
    print(json.dumps({"benchmark": "control_loop_50hz", "control_rate_hz": 50, **results}))


if __name__ == "__main__":
    main()
