"""The deployment core's import boundary: importing the control loop, the planner and its process, the executor,
the modes and the safety filter pulls in no torch, MuJoCo or ROS (a robot computer may have none of them, and the
core must not depend on a simulator or a middleware). Checked in a fresh interpreter, where nothing was imported
before."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = (
    "eva_runtime.control.autonomous_loop",
    "eva_runtime.control.episode_runner",
    "eva_runtime.control.executor",
    "eva_runtime.control.modes",
    "eva_runtime.control.planner",
    "eva_runtime.control.planner_port",
    "eva_runtime.control.planner_process",
    "eva_runtime.safety",
    "eva_runtime.robots.interface",
)
FORBIDDEN = ("torch", "mujoco", "rclpy", "diffusers", "eva_runtime.sim", "eva_runtime.ros")


def test_the_core_imports_no_torch_mujoco_or_ros() -> None:
    probe = (
        "import importlib, json, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or "
        f"any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
