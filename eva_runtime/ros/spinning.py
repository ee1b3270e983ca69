"""Spinning an executor on a background thread and stopping it cleanly: `BackgroundSpin`, and `spinning`, a node
in its own rclpy context spun that way and shut down on leaving the block: how a benchmark or a test drives a
graph from outside it (bench/ros_graph.py, ros_success.py, ros_chaos.py, tests/ros_graph.py,
tests/test_ros_process_lifecycle.py).

Why not `threading.Thread(target=executor.spin)` and `executor.shutdown()`: rclpy's `Executor.shutdown` marks the
executor shut down before it would wait for the work in progress, so it never waits, and then destroys the guard
condition that a spin still inside its wait holds. The spinning thread, or a callback it started, then fails with
"cannot use Destroyable because destruction was requested" in a task nobody reads, printed at interpreter exit as
"The following exception was never retrieved" (seen beside a CPU hog, which makes the overlap likely). Here the
thread spins in short waits until told to stop and is joined before the executor is shut down, so nothing of it
is running when the executor and then the nodes are destroyed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import rclpy
from rclpy.context import Context
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node

__all__ = ["BackgroundSpin", "spinning"]

NodeT = TypeVar("NodeT", bound=Node)


class BackgroundSpin:
    """`executor` spun on a daemon thread from `start()` until `stop()`, which returns once nothing of it runs."""

    WAIT_S = 0.05  # how long one wait may block: the delay between stop() and the thread noticing it

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True, name="ros-spin")

    def start(self) -> BackgroundSpin:
        self._thread.start()
        return self

    def _spin(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            self.executor.spin_once(timeout_sec=self.WAIT_S)

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop spinning, join the thread, then shut the executor down (a MultiThreadedExecutor also joins its
        workers there); False if the thread was still inside a callback after `timeout_s`."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        stopped = not self._thread.is_alive()
        self.executor.shutdown(timeout_sec=timeout_s)
        return stopped


@contextmanager
def spinning(domain: int, make: Callable[[Context], NodeT]) -> Iterator[NodeT]:
    """`make(context)`'s node, spun by a SingleThreadedExecutor on a daemon thread until the block ends."""
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = make(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = BackgroundSpin(executor).start()
    try:
        yield node
    finally:
        spin.stop()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
