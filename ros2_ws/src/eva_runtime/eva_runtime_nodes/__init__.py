"""Entry points of the ament package: each imports its node from the core `eva_runtime` package and runs it."""

from __future__ import annotations

import importlib
import sys

__all__ = ["run"]


def run(module: str, executable: str) -> int:
    """Import `module` (a node module of eva_runtime.ros) and run its main(), or explain what is missing."""
    try:
        node = importlib.import_module(module)
    except ImportError as error:
        print(
            f"{executable}: cannot import {module} ({error}).\n"
            "The node code is the eva_runtime Python package: install it into the Python that runs ROS 2, e.g.\n"
            "  python3 -m pip install -e <eva-runtime repository>[runtime,sim]",
            file=sys.stderr,
        )
        return 1
    return int(node.main() or 0)
