"""Where a grasp is lost: a per-episode timeline of the right gripper around the cube, closed loop, transfer cube.

For each episode of `eva run` (the full runtime, real time) it records every tick's right-gripper opening (measured),
whether the right fingers touch the cube, the cube's height, the distance from the fingers to the cube
(`TaskSpec.reach_distance`, ~4 cm for a centred grasp), the task stage and the left gripper's opening, and prints
one JSON object: per episode the furthest stage, the closest approach, each time the gripper starts to close (its
opening falls through `--closing-below`) with the distance at that moment, and each change of the stage held 5
ticks (so a cube handed over and then lost shows when, and with which gripper open). A policy that closes on
schedule but short of the cube shows as closings at 7-12 cm; the oracle closes at about 4 cm.

    MUJOCO_GL=egl .venv/bin/python bench/grasp_trace.py --bundle models/bundle_transfer_cube --episodes 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from eva_runtime.control.sim_session import run_sim_episodes
from eva_runtime.sim.tasks import RIGHT_FINGERS, task_spec

LEFT_GRIPPER, RIGHT_GRIPPER = 6, 13


def _stage_changes(trace: np.ndarray, hold_ticks: int = 5) -> list[dict]:
    """Each change of the task stage held for `hold_ticks` ticks: when, to which stage, both grippers' openings."""
    changes, current = [], 0.0
    stage = trace[:, 5]
    for i in range(len(trace) - hold_ticks + 1):
        window = stage[i : i + hold_ticks]
        if window.min() == window.max() and window[0] != current:
            current = window[0]
            changes.append(
                {"time_s": round(float(trace[i, 0]), 2), "stage": int(current),
                 "right_opening": round(float(trace[i, 1]), 2), "left_opening": round(float(trace[i, 6]), 2)}
            )  # fmt: skip
    return changes


def _closings(trace: np.ndarray, below: float) -> list[dict]:
    """Ticks where the measured opening falls through `below`, with the time and the distance then."""
    opening, time, reach = trace[:, 1], trace[:, 0], trace[:, 4]
    crossed = np.flatnonzero((opening[1:] < below) & (opening[:-1] >= below)) + 1
    return [{"time_s": round(float(time[i]), 2), "reach_cm": round(100 * float(reach[i]), 1)} for i in crossed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--episode-steps", type=int, default=600)
    parser.add_argument("--gripper-latch", type=float, nargs=2, default=None, metavar=("CLOSE_BELOW", "OPEN_ABOVE"))
    parser.add_argument("--closing-below", type=float, default=0.75, help="opening a closing gripper passes")
    args = parser.parse_args()
    spec = task_spec("transfer_cube")
    traces: list[list[list[float]]] = []
    robots = []

    def watch(robot):  # the sim session's hook for leader arms: here, only a handle on the simulated robot
        robots.append(robot)
        return None

    def tick(index, episode_id, step, modes, stats) -> None:
        sim = robots[0].sim
        if step == 0:
            traces.append([])
        contacts = sim.contacts()
        touching = any(("red_box", finger) in contacts for finger in RIGHT_FINGERS)
        opening = float(sim.joint_positions()[RIGHT_GRIPPER])
        left = float(sim.joint_positions()[LEFT_GRIPPER])
        row = [sim.time, opening, float(touching), sim.body_pose("box")[2], spec.reach_distance(sim)]
        traces[-1].append([*row, float(spec.stage(sim)), left])

    loop = {"gripper_latch": tuple(args.gripper_latch)} if args.gripper_latch else None
    with tempfile.TemporaryDirectory() as scratch:
        result = run_sim_episodes(
            args.bundle,
            "transfer_cube",
            args.episodes,
            args.first_seed,
            Path(scratch) / "log.db",
            max_steps=args.episode_steps,
            leader_factory=watch,
            on_tick=tick,
            loop=loop,
        )
    episodes = []
    for seed_offset, rows in enumerate(traces):
        trace = np.array(rows)
        episodes.append(
            {
                "seed": args.first_seed + seed_offset,
                "stage": result.per_episode_stage[seed_offset],
                "closest_reach_cm": round(100 * float(trace[:, 4].min()), 1),
                "touch_ticks": int(trace[:, 2].sum()),
                "max_cube_height_m": round(float(trace[:, 3].max()), 3),
                "closings": _closings(trace, args.closing_below),
                "stage_changes": _stage_changes(trace),
            }
        )
    print(json.dumps({"bundle": str(args.bundle), "stages_reached": result.stages_reached, "episodes": episodes}))


if __name__ == "__main__":
    main()
