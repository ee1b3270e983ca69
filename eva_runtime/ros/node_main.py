"""The executables' `main`: `--help` before `--ros-args` prints the node's parameters, otherwise init, spin the node
on a multi-threaded executor until Ctrl-C, SIGTERM or the death of the process that started it, then run the
node's own cleanup and shut rclpy down.

Ending: rclpy's signal handlers (SIGINT and SIGTERM) shut the context down, which stops every publisher at once
and ends `spin`. With `exit_with_parent` (default true) the node asks the kernel for SIGTERM when its parent
(`ros2 launch`, `ros2 run`) dies, so a killed launcher leaves no node behind (process_lifetime.py).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

from eva_runtime.process_lifetime import signal_on_parent_death

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
    parent = os.getppid()  # read first: a parent that dies from here on is noticed (signal_on_parent_death)
    rclpy.init(args=args)
    node = make_node()
    if node.get_parameter("exit_with_parent").value:
        signal_on_parent_death(signal.SIGTERM, parent)  # handled by rclpy's SIGTERM handler, after init
    # One thread: rclpy's SingleThreadedExecutor. Its MultiThreadedExecutor re-polls an entity whose callback a
    # worker has not taken yet, a hot loop that held the GIL (75 % of a core in the sim node's main thread) and
    # delayed every other thread of the process (docs/ros.md, "Rates").
    executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # A SIGTERM shut the context down while the executor was building its wait set: a normal end.
    finally:
        cleanup(node)  # first, while a callback may still run: the planner and an open episode end now
        executor.shutdown()
        cleanup(node)  # again: a transition that was running (configure) may have built a runtime meanwhile
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
