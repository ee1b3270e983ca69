"""Test harness for the ROS tests: the simulated robot node, the policy node and a probe node in one process.

Real rclpy (the `ros` extra's wheels), real MuJoCo, a real planner process: each node spins on its own background
thread with the executor it gets in production (the sim node and the probe a SingleThreadedExecutor, the policy
node a MultiThreadedExecutor), while the test talks to them through ROS only (lifecycle and Trigger services,
parameter services, topics). One MultiThreadedExecutor for all three spun hot and starved the simulated robot's
thread of the GIL: joint-state gaps of seconds, the cause of flaky holds and homing (docs/ros.md, "Rates").
Discovery stays on loopback and every graph gets its own rclpy Context and a domain id no other module of this
run uses (docs/references.md §3).
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before any rclpy context exists
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from eva_runtime.ros.spinning import BackgroundSpin

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "models" / "bundle_transfer_cube"


def domain_id(offset: int) -> int:
    """A ROS domain for one test module: distinct per module (offset) and, likely, per concurrent pytest run."""
    return 1 + (os.getpid() * 7 + offset * 13) % 100


class Probe(Node):
    """The test's own node: records commands, modes, status and diagnostics; calls services."""

    def __init__(self, context: Context, command_topics: list[str]) -> None:
        super().__init__("probe", context=context)
        self._lock = threading.Lock()
        # Stamps as integer nanoseconds: epoch seconds in a float64 resolve only ~0.2 us, too coarse to rebuild
        # the filter's per-tick velocities from consecutive commands.
        self.commands: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
        self.modes: list[str] = []
        self.status: dict = {}
        self.diagnostics: dict[str, dict[str, str]] = {}
        self._service_clients: dict[str, object] = {}
        self._publishers_by_topic: dict[str, object] = {}
        reliable = QoSProfile(depth=1000)
        for topic in command_topics:
            self.create_subscription(JointState, topic, self._command(topic), reliable)
        latched = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, "/policy_node/mode", self._mode, latched)
        self.create_subscription(String, "/policy_node/status", self._status, 10)
        from diagnostic_msgs.msg import DiagnosticArray

        self.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 50)

    def _command(self, topic: str) -> Callable[[JointState], None]:
        def receive(message: JointState) -> None:
            stamp = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
            with self._lock:
                self.commands[topic].append((stamp, np.array(message.position)))

        return receive

    def _mode(self, message: String) -> None:
        with self._lock:
            self.modes.append(message.data)

    def _status(self, message: String) -> None:
        import json

        with self._lock:
            self.status = json.loads(message.data)

    def _diagnostics(self, message) -> None:
        with self._lock:
            for status in message.status:
                values = {item.key: item.value for item in status.values}
                self.diagnostics[status.name] = {"level": int(status.level[0]), "message": status.message, **values}

    @property
    def mode(self) -> str | None:
        with self._lock:
            return self.modes[-1] if self.modes else None

    def recorded(self, topic: str, since: float = 0.0) -> list[tuple[int, np.ndarray]]:
        """(stamp in integer nanoseconds, positions) of the commands stamped at or after `since` (epoch s)."""
        with self._lock:
            return [item for item in self.commands[topic] if item[0] >= since * 1e9]

    def call(self, service: str, kind=Trigger, request=None, timeout: float = 30.0, attempts: int = 1):
        """`attempts` > 1 only for requests that are safe to repeat (reads): a response the server sends before
        the client's response reader is matched is dropped (rmw: "failed to send response (timeout)"), and only
        a new request gets another."""
        # One client per service, kept: destroying entities while the executor spins races with its wait set.
        client = self._service_clients.get(service)
        if client is None:
            client = self._service_clients[service] = self.create_client(kind, service)
        if not client.wait_for_service(timeout_sec=10.0):
            raise TimeoutError(f"service {service} is not available")
        for attempt in range(attempts):
            try:
                return client.call(request if request is not None else kind.Request(), timeout_sec=timeout)
            except TimeoutError:
                if attempt == attempts - 1:
                    raise

    def publisher(self, topic: str):
        """A JointState publisher on `topic`, created once and kept (see `call`)."""
        if topic not in self._publishers_by_topic:
            self._publishers_by_topic[topic] = self.create_publisher(JointState, topic, 10)
        return self._publishers_by_topic[topic]

    def trigger(self, service: str) -> tuple[bool, str]:
        response = self.call(service)
        return response.success, response.message

    def transition(self, node: str, transition: int, timeout: float = 180.0) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition))
        return self.call(f"/{node}/change_state", ChangeState, request, timeout).success

    def lifecycle_state(self, node: str) -> str:
        return self.call(f"/{node}/get_state", GetState, GetState.Request()).current_state.label

    def set_parameters(self, node: str, **values: object) -> None:
        request = SetParameters.Request(
            parameters=[
                Parameter(name.replace("__", "."), value=value).to_parameter_msg() for name, value in values.items()
            ]
        )
        results = self.call(f"/{node}/set_parameters", SetParameters, request).results
        assert all(result.successful for result in results), results


class Graph:
    """Simulated robot + policy node + probe, spinning on a background thread until `close()`."""

    def __init__(
        self,
        log_path: Path,
        domain: int,
        convention: str = "classic",
        policy: dict | None = None,
        sim: dict | None = None,
    ) -> None:
        from eva_runtime.ros.conventions import CONVENTIONS
        from eva_runtime.ros.policy_node import PolicyNode
        from eva_runtime.ros.sim_robot_node import SimRobotNode
        from eva_runtime.sim.bimanual_sim import START_POSE

        self.convention = CONVENTIONS[convention]
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        sim_parameters = {
            "embodiment_file": str(BUNDLE / "embodiment.yaml"),
            "topic_convention": convention,
            "camera_width": 64,  # small renders: the IDM reads 64 x 64 anyway
            "camera_height": 64,
            "camera_rate_hz": 10.0,
            **(sim or {}),
        }
        policy_parameters = {
            "bundle": str(BUNDLE),
            "topic_convention": convention,
            "log_path": str(log_path),
            "home_pose": START_POSE.tolist(),
            "episode.instruction": "pick up the cube and hand it to the other arm",
            "diagnostics_rate_hz": 4.0,
            "status_rate_hz": 10.0,
            **(policy or {}),
        }
        self.nodes: list[Node] = []
        try:
            self.sim = SimRobotNode(context=self.context, parameter_overrides=_overrides(sim_parameters))
            self.nodes.append(self.sim)
            self.policy = PolicyNode(context=self.context, parameter_overrides=_overrides(policy_parameters))
            self.nodes.append(self.policy)
            topics = sorted({*self.convention.command.values(), *CONVENTIONS["joint_states"].command.values()})
            self.probe = Probe(self.context, topics)
            self.nodes.append(self.probe)
        except BaseException:
            self.close()
            raise
        self.executors = []
        for node in self.nodes:
            executor = (
                MultiThreadedExecutor(num_threads=4, context=self.context)
                if node is self.policy
                else SingleThreadedExecutor(context=self.context)
            )
            executor.add_node(node)
            self.executors.append(BackgroundSpin(executor))
        for spin in self.executors:
            spin.start()

    def activate(self) -> None:
        assert self.probe.transition("policy_node", Transition.TRANSITION_CONFIGURE)
        assert self.probe.transition("policy_node", Transition.TRANSITION_ACTIVATE)
        wait_for(lambda: self.probe.status.get("active") and not self.probe.status.get("homing"), 20.0, "homing")

    def close(self) -> None:
        for spin in getattr(self, "executors", ()):
            spin.stop()  # joined before the nodes are destroyed (eva_runtime/ros/spinning.py says why)
        for node in reversed(self.nodes):
            if hasattr(node, "release_runtime"):
                node.release_runtime()
            if hasattr(node, "close"):
                node.close()
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _overrides(values: dict) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in values.items()]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
