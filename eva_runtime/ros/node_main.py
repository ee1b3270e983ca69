"""The executables' `main`: `--help` before `--ros-args` prints the node's parameters, otherwise init, spin the node
on a multi-threaded executor until Ctrl-C or shutdown, then run the node's own cleanup and shut rclpy down."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

__all__ = ["run_node"]


def run_node(
    args: list[str] | None,
    usage: str,
    parameters: Sequence,
    make_node: Callable[[], object],
    threads: int,
    cleanup: Callable[[object], None],
) -> int:
    argv = sys.argv[1:] if args is None else args
    before_ros_args = argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "-h" in before_ros_args or "--help" in before_ros_args:
        print(usage + "\n".join(f"  {s.name}: {s.description}" for s in parameters))
        return 0
    rclpy.init(args=args)
    node = make_node()
    executor = MultiThreadedExecutor(num_threads=threads)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        cleanup(node)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
