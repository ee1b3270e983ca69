"""`ros2 run eva_runtime policy_node`: the EVA policy lifecycle node (eva_runtime.ros.policy_node)."""

from __future__ import annotations

import sys

from eva_runtime_nodes import run


def main() -> int:
    return run("eva_runtime.ros.policy_node", "policy_node")


if __name__ == "__main__":
    sys.exit(main())
