"""`ros2 run eva_runtime sim_robot_node`: the simulated robot behind the vendor topics (eva_runtime.ros)."""

from __future__ import annotations

import sys

from eva_runtime_nodes import run


def main() -> int:
    return run("eva_runtime.ros.sim_robot_node", "sim_robot_node")


if __name__ == "__main__":
    sys.exit(main())
