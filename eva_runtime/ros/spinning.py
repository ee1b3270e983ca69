"""`spinning`: a node in its own rclpy context, spun on a daemon thread and shut down on leaving the block: how a
benchmark or a test drives a graph from outside it (bench/ros_graph.py, ros_success.py, ros_chaos.py,
tests/test_ros_process_lifecycle.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

__all__ = ["spinning"]

NodeT = TypeVar("NodeT", bound=Node)


@contextmanager
def spinning(domain: int, make: Callable[[Context], NodeT]) -> Iterator[NodeT]:
    """`make(context)`'s node, spun by a SingleThreadedExecutor on a daemon thread until the block ends."""
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = make(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        yield node
    finally:
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
