"""Spinning on a background thread (eva_runtime/ros/spinning.py): stop() returns only when no callback of it is
running, so the node can be destroyed right after; callbacks run while it spins and never after it stopped."""

from __future__ import annotations

import threading
import time

import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from eva_runtime.ros.spinning import BackgroundSpin
from tests.ros_graph import domain_id, wait_for


class SlowTimer(Node):
    """A timer whose callback takes a while, and records when it is inside it."""

    def __init__(self, context: Context) -> None:
        super().__init__("slow_timer", context=context)
        self.inside = threading.Event()
        self.calls = 0
        self.finished = 0
        self.create_timer(0.01, self._tick)

    def _tick(self) -> None:
        self.calls += 1
        self.inside.set()
        time.sleep(0.2)
        self.finished += 1
        self.inside.clear()


def _stopped_inside_a_callback(executor_class, offset: int) -> None:
    context = Context()
    rclpy.init(context=context, domain_id=domain_id(offset))
    try:
        node = SlowTimer(context)
        executor = executor_class(context=context)
        executor.add_node(node)
        spin = BackgroundSpin(executor).start()
        wait_for(lambda: node.calls >= 2 and node.inside.is_set(), 10.0, "a callback in progress")
        assert spin.stop()
        # stop() waited for the callback it interrupted: every call started has finished, and none starts later.
        assert node.finished == node.calls
        calls = node.calls
        time.sleep(0.1)
        assert node.calls == calls
        node.destroy_node()  # nothing of the spin is left to use the node's entities
    finally:
        rclpy.try_shutdown(context=context)


def test_stop_waits_for_the_callback_in_progress_single_threaded() -> None:
    _stopped_inside_a_callback(SingleThreadedExecutor, 21)


def test_stop_waits_for_the_callback_in_progress_multi_threaded() -> None:
    _stopped_inside_a_callback(lambda context: MultiThreadedExecutor(num_threads=2, context=context), 22)
