"""Benchmark: task success through the ROS 2 graph vs `eva run`, on the same seeds, with the same bundle.

The ROS side starts `sim_robot_node` and `policy_node` as separate processes with the launch file's parameters
(bench/ros_graph.py), plus `home_pose` = the scene's start pose. Per episode with seed S:
1. deactivate and activate the policy node (activation slides the arms home);
2. set the sim node's `seed` and the policy node's `episode.seed` to S, and call `~/reset` (objects placed by S);
3. `start_episode`, `mode/autonomous`; the task's own success check on the privileged state every 0.1 s for
   `--episode-seconds` (default 8 s: `eva run`'s 400 ticks at 50 Hz);
4. `end_episode/success|failure` by that check.

The `eva run` side runs `run_sim_episodes` on the same seeds (planner process, real time, 400 ticks). Prints one
JSON document: both success counts with Wilson 95 % intervals, per-seed outcomes, and the seeds where they differ.

    MUJOCO_GL=egl .venv/bin/python bench/ros_success.py --episodes 20 [--first-seed 1000] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ros_graph import Probe, node_commands, start_nodes, stop_nodes, success_check, topic_specs, wait_for

from eva_runtime.embodiment import load_embodiment
from eva_runtime.records.success_rate import wilson_interval
from eva_runtime.ros.spinning import spinning
from eva_runtime.sim.bimanual_sim import START_POSE

ROOT = Path(__file__).resolve().parents[1]
TASK = "transfer_cube"


def set_integer(probe: Probe, node: str, name: str, value: int) -> None:
    parameter = Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value))
    response = probe.call(f"/{node}/set_parameters", SetParameters, SetParameters.Request(parameters=[parameter]), 10)
    if not response.results[0].successful:
        raise RuntimeError(f"{node} refused {name}={value}: {response.results[0].reason}")


def homed(probe: Probe, processes: dict, since: float) -> None:
    """Wait for a ~/status report received after `since` that says active and not homing."""

    def done() -> bool:
        received, status = probe.status[-1] if probe.status else (0.0, {})
        return received > since + 0.3 and status.get("active") and not status.get("homing")

    wait_for(done, 60.0, "homing", processes)


def ros_episode(probe: Probe, processes: dict, seed: int, seconds: float, check) -> dict[str, Any]:
    """One episode through the graph; success is the task's check within `seconds` of AUTONOMOUS."""
    probe.transition(Transition.TRANSITION_DEACTIVATE, 30.0)
    probe.transition(Transition.TRANSITION_ACTIVATE, 60.0)
    homed(probe, processes, time.time())
    set_integer(probe, "sim_robot_node", "seed", seed)
    set_integer(probe, "policy_node", "episode.seed", seed)
    probe.trigger("/sim_robot_node/reset")
    probe.privileged = None  # a check must see the new scene, not the last one
    probe.trigger("/policy_node/start_episode")
    probe.trigger("/policy_node/mode/autonomous")
    began, first = time.time(), None
    while time.time() - began < seconds and first is None:
        time.sleep(0.1)
        if check(probe.privileged):
            first = round(time.time() - began, 2)
    probe.trigger(f"/policy_node/end_episode/{'success' if first is not None else 'failure'}")
    return {"seed": seed, "success": first is not None, "first_success_s": first}


def ros_side(bundle: Path, seeds: list[int], seconds: float) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="eva_bench_ros_success_"))
    domain = 1 + (os.getpid() * 7 + 31) % 100
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    home = "home_pose:=[" + ",".join(f"{x:.6f}" for x in START_POSE) + "]"
    commands = node_commands(bundle, run_dir, TASK, [], [home])
    check = success_check(TASK, load_embodiment(str(bundle / "embodiment.yaml")).control_rate_hz)
    processes: dict[str, subprocess.Popen] = {}
    episodes: list[dict[str, Any]] = []
    error = None
    with spinning(domain, lambda context: Probe(context, topic_specs(bundle))) as probe:
        try:
            start_nodes(commands, domain, run_dir, processes)
            probe.transition(Transition.TRANSITION_CONFIGURE, 240.0)
            probe.transition(Transition.TRANSITION_ACTIVATE, 60.0)
            homed(probe, processes, time.time())
            for seed in seeds:
                episodes.append(ros_episode(probe, processes, seed, seconds, check))
        except Exception as failure:  # still a JSON document, with the logs to read
            error = f"{type(failure).__name__}: {failure}"
        finally:
            codes = stop_nodes(processes)
    logs = {name: str(run_dir / f"{name}.log") for name in commands}
    return {"episodes": episodes, "error": error, "node_exit_codes": codes, "logs": logs}


def eva_run_side(bundle: Path, seeds: list[int]) -> dict[str, Any]:
    from eva_runtime.control.sim_session import run_sim_episodes

    log = Path(tempfile.mkdtemp(prefix="eva_bench_run_")) / "log.db"
    result = run_sim_episodes(bundle, TASK, len(seeds), seeds[0], log)
    return {"episodes": [{"seed": s, "success": ok} for s, ok in zip(seeds, result.per_episode, strict=True)]}


def summary(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    successes = sum(e["success"] for e in episodes)
    low, high = wilson_interval(successes, len(episodes)) if episodes else (None, None)
    return {"successes": successes, "episodes": len(episodes), "wilson95": [low, high]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--episode-seconds", type=float, default=8.0)
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "bundle_transfer_cube")
    args = parser.parse_args()
    bundle = args.bundle.resolve()
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    load_before = [round(x, 2) for x in os.getloadavg()]
    ros = ros_side(bundle, seeds, args.episode_seconds)
    run = eva_run_side(bundle, seeds)
    ros_by_seed = {e["seed"]: e["success"] for e in ros["episodes"]}
    differ = [e["seed"] for e in run["episodes"] if e["seed"] in ros_by_seed and ros_by_seed[e["seed"]] != e["success"]]
    result = {
        "benchmark": "ros_success",
        "task": TASK,
        "bundle": str(bundle),
        "seeds": [seeds[0], seeds[-1]],
        "ros": summary(ros["episodes"]) | ros,
        "eva_run": summary(run["episodes"]) | run,
        "seeds_that_differ": differ,
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }
    print(json.dumps(result, indent=1))
    return 1 if ros["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
