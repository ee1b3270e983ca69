"""Benchmark: the control loop at 50 and 200 Hz while the planner process is busy, async vs sync, in one run.

Runs N real-time-paced transfer-cube episodes per (rate, mode) with the shipped bundle (oracle world model +
IDM), async once more without the steadier loop (garbage collector paused during episodes, planner niced and
off the loop's core), async with the cameras rendered on a thread of their own (`eva run --camera-thread`), and
both async rows once more with the loop's process under SCHED_FIFO (`eva run --realtime`; the row says why not
where the system refuses), and prints one JSON object: per configuration the tick period jitter
|period - nominal| (p50 / p99 / max), stalls (periods over 10 ms late), missed deadlines per 1,000 ticks, work per
tick (p50 / p99 / max), the share of ticks the robot held (idle), the first-frame-to-first-planned-command
latency (median over episodes), and async/sync ratios.
At 200 Hz the simulated scene steps in 1.67 ms physics steps (3 per tick) and the embodiment file is the bundle's with
`control_rate_hz: 200`; everything else is the same.

    MUJOCO_GL=egl .venv/bin/python bench/control_loop.py [--episodes 5] [--rates 50,200]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from eva_runtime.bundle import load_bundle
from eva_runtime.control.deployment import Deployment
from eva_runtime.control.episode_runner import LoopSettings, run_autonomous_episode
from eva_runtime.control.realtime import realtime_loop
from eva_runtime.embodiment import load_embodiment
from eva_runtime.robots.mujoco_robot import MujocoRobot

ROOT = Path(__file__).resolve().parents[1]
STALL_MS = 10.0  # the bound: no period more than this late


def measure(
    bundle, embodiment_file: Path, synchronous: bool, episodes: int, steady: bool = True, stream: bool = False
) -> dict[str, float]:
    """`steady`: the loop pauses the garbage collector during episodes and the planner runs niced, off the loop's
    core (control/realtime.py); False measures the loop without either, in the same run. `stream`: the cameras
    render on their own thread (robots/sim_cameras.py), not inside the tick that asks for a plan."""
    embodiment = load_embodiment(embodiment_file)
    cameras = LoopSettings().cameras
    robot = MujocoRobot(embodiment, "transfer_cube", streamed_cameras=cameras if stream else ())
    robot.connect()
    deployment = Deployment.from_bundle(bundle, "transfer_cube")
    spec = dataclasses.replace(deployment.spec, embodiment=str(embodiment_file), low_priority=steady)
    deployment = dataclasses.replace(deployment, spec=spec)
    planner = deployment.start_planner()
    ticks_per_episode = round(400 * embodiment.control_rate_hz / 50)  # 8 s episodes at any rate
    settings = LoopSettings(synchronous=synchronous, max_steps=ticks_per_episode, pause_gc=steady, cameras=cameras)
    oracle = deployment.privileged_source(robot)
    stats = [run_autonomous_episode(robot, planner, 5000 + i, settings, oracle) for i in range(episodes)]
    planner.close()
    robot.disconnect()
    period = robot.embodiment.control_period_s
    jitter = np.abs(np.concatenate([s.periods_s for s in stats]) - period) * 1e3
    work = np.concatenate([s.work_s for s in stats]) * 1e3
    ticks = sum(s.steps for s in stats)
    first = [s.first_command_s for s in stats if s.first_command_s is not None]
    latencies = [x for s in stats for x in s.latencies_s]
    return {
        "episodes": episodes,
        "ticks": ticks,
        "successes": sum(s.success for s in stats),
        "jitter_ms_p50": round(float(np.percentile(jitter, 50)), 3),
        "jitter_ms_p99": round(float(np.percentile(jitter, 99)), 3),
        "jitter_ms_max": round(float(jitter.max()), 3),
        "stalls_over_10ms": int(np.count_nonzero(jitter > STALL_MS)),
        "missed_deadlines_per_1000_ticks": round(1000 * sum(s.overruns for s in stats) / ticks, 2),
        "work_ms_p50": round(float(np.percentile(work, 50)), 3),
        "work_ms_p99": round(float(np.percentile(work, 99)), 3),
        "work_ms_max": round(float(work.max()), 3),
        "idle_share": round(sum(s.hold_ticks for s in stats) / ticks, 3),
        "first_command_s_median": round(float(np.median(first)), 3) if first else None,
        "planning_latency_s_p50": round(float(np.median(latencies)), 3) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "models/bundle_transfer_cube")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--rates", default="50,200", help="control rates in Hz, comma-separated (50 and/or 200)")
    args = parser.parse_args()
    rates = [int(rate) for rate in args.rates.split(",")]
    bundle = load_bundle(args.bundle)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        fast = Path(scratch) / "aloha_sim_200hz.yaml"
        text = bundle.files["embodiment"].read_text().replace("control_rate_hz: 50.0", "control_rate_hz: 200.0")
        fast.write_text(text)
        for rate, embodiment_file in ((50, bundle.files["embodiment"]), (200, fast)):
            if rate not in rates:
                continue
            for mode, synchronous in (("async", False), ("sync", True)):
                results[f"{rate}hz_{mode}"] = measure(bundle, embodiment_file, synchronous, args.episodes)
            # Before/after the steadier loop (GC paused, planner niced and off the loop's core), async.
            results[f"{rate}hz_async_plain"] = measure(bundle, embodiment_file, False, args.episodes, steady=False)
            plain, steady = results[f"{rate}hz_async_plain"], results[f"{rate}hz_async"]
            results[f"{rate}hz_jitter_p99_steady_over_plain"] = round(
                steady["jitter_ms_p99"] / max(plain["jitter_ms_p99"], 1e-9), 2
            )
            streamed = measure(bundle, embodiment_file, False, args.episodes, stream=True)
            results[f"{rate}hz_async_camera_thread"] = streamed
            for name, stream in (("async_realtime", False), ("async_camera_thread_realtime", True)):
                with realtime_loop() as granted:
                    results[f"{rate}hz_{name}"] = measure(bundle, embodiment_file, False, args.episodes, stream=stream)
                results[f"{rate}hz_{name}"]["scheduler"] = granted
    results["idle_share_async_over_sync"] = {
        f"{rate}hz": round(results[f"{rate}hz_async"]["idle_share"] / results[f"{rate}hz_sync"]["idle_share"], 2)
        for rate in rates
    }
    print(json.dumps({"benchmark": "control_loop", **results}))


if __name__ == "__main__":
    main()
