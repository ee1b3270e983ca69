"""`ros2 run eva_runtime record_node`: vendor-layout HDF5 episodes recorded from the topics (eva_runtime.ros)."""

from __future__ import annotations

import sys

from eva_runtime_nodes import run


def main() -> int:
    return run("eva_runtime.ros.record_node", "record_node")


if __name__ == "__main__":
    sys.exit(main())
