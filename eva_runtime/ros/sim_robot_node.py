"""SimRobotNode: the MuJoCo bimanual simulation behind exactly the vendor ROS topics, so the graph runs without arms.

It behaves like the arm drivers and camera drivers of a CobotMagic:
- follower joint states (``sensor_msgs/JointState``, names ``joint0..joint6``, one message per arm: position,
  velocity and effort, the simulated actuator forces) after every physics step, which runs at the embodiment's
  control rate in real time;
- three camera streams (``sensor_msgs/Image`` rgb8) at `camera_rate_hz`, rendered at `camera_width` x
  `camera_height` (small renders keep tests cheap);
- command JointStates on the command topics become position targets, held until the next command, as the arm
  firmware does; a malformed command (wrong count or names, NaN) is refused, counted, and the last target kept.
- ``~/reset`` (std_srvs/Trigger) places the task's objects again from the `seed` parameter; the arms stay where
  they are, as when a person resets a real table.

Sim-only test-instrument channel: for the oracle world model (which cheats by re-simulating the scene) the node
also publishes its full integration state on `topics.privileged_state` (default ``/eva_sim/privileged_state``,
``std_msgs/UInt8MultiArray`` carrying msgpack bytes from `eva_runtime.wire`: ``{"sim_state": float64 array,
"sim_time": float}``). No real robot has this topic; the policy node subscribes to it only when the bundle's
world model is the oracle.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import UInt8MultiArray
from std_srvs.srv import Trigger

from eva_runtime.ros.conventions import resolve_topics
from eva_runtime.ros.messages import (
    MalformedMessageError,
    joint_state_to_vector,
    rgb_to_image,
    seconds_to_stamp,
    vector_to_joint_state,
)
from eva_runtime.ros.parameters import CAMERA_NAMES, SIM_ROBOT_PARAMETERS, declare, read

__all__ = ["SimRobotNode", "main"]


class SimRobotNode(Node):
    """The simulated robot. Physics and resets run on one thread the node owns (a driver's loop is its own clock);
    the cameras render on a second one, from snapshots the physics thread hands over at the camera rate, into
    their own `MjData` and GL context. Rendering three cameras takes 10-20 ms here, as long as a control period:
    on the physics thread it delayed follower states by that much at every frame (bench/ros_graph.py). MuJoCo
    releases the GIL while it renders, so the two threads run side by side."""

    # Physics steps run back to back when the thread was late (rendering, a busy machine), so simulated time keeps
    # up with the wall clock the policy commands by; a stall longer than this lets time slip instead.
    MAX_CATCH_UP_STEPS = 25

    def __init__(self, node_name: str = "sim_robot_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare(self, SIM_ROBOT_PARAMETERS)
        from eva_runtime.embodiment import load_embodiment

        self.embodiment = load_embodiment(str(read(self, "embodiment_file")))
        if self.embodiment.dof != 14 or len(self.embodiment.arms) != 2:
            raise ValueError(f"the simulated robot is bimanual 2 x 7; {self.embodiment.name} has {self.embodiment.dof}")
        self.topics = resolve_topics(
            str(read(self, "topic_convention")),
            {
                f"{role}.{arm}": str(read(self, f"topics.{role}.{arm}"))
                for role in ("follower_state", "command")
                for arm in ("left", "right")
            },
        )
        self.ros_joint_names = (
            self.embodiment.topics.joint_names if self.embodiment.topics else tuple(f"joint{i}" for i in range(7))
        )
        self._lock = threading.Lock()  # target and counters: written by command callbacks, read by the sim thread
        self._target: np.ndarray | None = None
        self.rejected: Counter[str] = Counter()
        self.commands_received = 0
        self.steps = 0
        self.sim_time = 0.0
        self._reset_requests: queue.SimpleQueue[tuple[int, threading.Event, list]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._robot = None
        # Read at 50 Hz on the sim thread: cached and updated on set, not read through the node's parameter lock.
        self._joint_states_enabled = bool(read(self, "joint_states_enabled"))
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._create_interfaces()
        first = self.embodiment.cameras[0]
        self._size = (int(read(self, "camera_height")) or first.height, int(read(self, "camera_width")) or first.width)
        self._camera_period = 1.0 / (float(read(self, "camera_rate_hz")) or first.fps)
        self._snapshots = _Mailbox()  # physics -> cameras: the newest (snapshot, stamp) only
        self._thread = threading.Thread(target=self._run, name="mujoco", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is None:
            self._cameras_ready = threading.Event()
            self._camera_thread = threading.Thread(target=self._render_loop, name="cameras", daemon=True)
            self._camera_thread.start()
            self._cameras_ready.wait()
        if self._failure is not None:
            self.close()
            raise RuntimeError(f"the simulated robot did not start: {self._failure}") from self._failure

    def _create_interfaces(self) -> None:
        """Publishers (follower states, cameras, privileged state, diagnostics), command subscriptions, reset."""
        self._state_publishers = {
            arm: self.create_publisher(JointState, topic, qos_profile_sensor_data)
            for arm, topic in self.topics.follower_state.items()
        }
        self._camera_publishers = {}
        for camera in self.embodiment.cameras:
            override = str(read(self, f"topics.camera.{camera.name}")) if camera.name in CAMERA_NAMES else ""
            topic = override or camera.topic
            self._camera_publishers[camera.name] = self.create_publisher(Image, topic, qos_profile_sensor_data)
        self._privileged = None
        if bool(read(self, "publish_privileged_state")):
            topic = str(read(self, "topics.privileged_state"))
            self._privileged = self.create_publisher(UInt8MultiArray, topic, qos_profile_sensor_data)
        self._inputs = ReentrantCallbackGroup()
        for index, topic in enumerate(self.topics.command.values()):
            self.create_subscription(JointState, topic, self._on_command(index, topic), 10, callback_group=self._inputs)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/reset", self._reset, callback_group=self._inputs)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._inputs)

    # --- the simulation thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        from eva_runtime.robots.mujoco_robot import MujocoRobot

        try:
            robot = MujocoRobot(self.embodiment, str(read(self, "task")))
            robot.connect()
            start_pose = read(self, "start_pose")
            robot.reset_episode(int(read(self, "seed")), np.array(start_pose) if len(start_pose) else None)
        except Exception as error:  # reported by the constructor, which is waiting for this thread
            self._failure = error
            self._ready.set()
            return
        self._robot = robot
        self._first_snapshot = robot.sim.snapshot()  # the camera thread's warm-up render (not published)
        with self._lock:
            self._target = robot.sim.joint_positions()  # the firmware holds the pose it starts in
        self._ready.set()
        period = self.embodiment.control_period_s
        next_step = next_frame = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_step:
                    behind = min(int((now - next_step) / period) + 1, self.MAX_CATCH_UP_STEPS)
                    self._step(robot.sim, behind)
                    next_step = max(next_step + behind * period, now - period)
                if now >= next_frame:
                    self._snapshots.put((robot.sim.snapshot(), self._now()))
                    next_frame = max(next_frame + self._camera_period, now)
                while not self._reset_requests.empty():
                    self._do_reset(robot, *self._reset_requests.get())
                self._stop.wait(max(0.0, min(next_step, next_frame) - time.monotonic()))
        except Exception:
            if self.context.ok():
                raise
            # SIGTERM shut the context down before close() stopped this thread: publishing fails, the node ends.
        finally:
            robot.disconnect()

    def _step(self, sim, steps: int) -> None:
        with self._lock:
            target = self._target.copy()
        for _ in range(steps):
            sim.apply(target)
        self.steps += steps
        self.sim_time = sim.time
        stamp = self._now()
        position, velocity, effort = sim.joint_positions(), sim.joint_velocities(), sim.joint_efforts()
        states = self._state_publishers.values() if self._joint_states_enabled else ()  # a stopped driver is silent
        for index, publisher in enumerate(states):
            part = slice(7 * index, 7 * index + 7)
            message = vector_to_joint_state(position[part], self.ros_joint_names, stamp, velocity[part], effort[part])
            publisher.publish(message)
        if self._privileged is not None:
            from eva_runtime.wire import pack

            snapshot = sim.snapshot()
            message = UInt8MultiArray()
            # The ROS time of the state, so a reader can tell a state from before a ~/reset from one after it.
            message.data = pack({"sim_state": snapshot.state, "sim_time": snapshot.time, "stamp": stamp})
            self._privileged.publish(message)

    def _on_parameters_set(self, parameters) -> None:
        for parameter in parameters:
            if parameter.name == "joint_states_enabled":
                self._joint_states_enabled = bool(parameter.value)

    def _render_loop(self) -> None:
        """The camera thread: render each handed-over snapshot, stamped with the time it was taken."""
        cameras = tuple(self._camera_publishers)
        try:
            renderer = self._robot.sim.snapshot_cameras(*self._size)
            renderer.render(self._first_snapshot, cameras)  # GL context made here, on this thread
        except Exception as error:  # reported by the constructor, which is waiting for this thread
            self._failure = error
            self._cameras_ready.set()
            return
        self._cameras_ready.set()
        try:
            while not self._stop.is_set():
                taken = self._snapshots.take(timeout=0.1)
                if taken is None or not bool(read(self, "cameras_enabled")):
                    continue  # a camera driver that stopped: the policy must notice by the frames' age
                snapshot, stamp = taken
                for name, image in renderer.render(snapshot, cameras).items():
                    if self._stop.is_set():
                        return
                    self._camera_publishers[name].publish(rgb_to_image(image, stamp, frame_id=name))
        except Exception:
            if self.context.ok():
                raise
            # SIGTERM shut the context down before close() stopped this thread: publishing fails, the node ends.
        finally:
            renderer.close()

    def _do_reset(self, robot, seed: int, done: threading.Event, result: list) -> None:
        """Objects placed anew from `seed`; the arms stay where they are. Refused, the scene unchanged, when an
        object would be placed into an arm: interpenetrating bodies are thrown apart by the solver, which shakes
        the arm far from any command (bench/ros_chaos.py saw re-seeds taken mid-shake)."""
        from eva_runtime.sim.tasks import objects_inside_arms

        before, pose = robot.sim.snapshot(), robot.sim.joint_positions()
        robot.reset_episode(seed, pose)
        if overlapping := objects_inside_arms(robot.sim):
            robot.sim.restore(before)
            result.append((False, f"refused: seed {seed} places an object into an arm ({', '.join(overlapping)})"))
        else:
            with self._lock:
                self._target = pose.copy()
            result.append((True, f"scene reset with seed {seed}"))
        done.set()

    @property
    def target(self) -> np.ndarray:
        """The position target the simulated firmware holds now."""
        with self._lock:
            return self._target.copy()

    # --- ROS callbacks ------------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_command(self, arm_index: int, topic: str):
        def receive(message: JointState) -> None:
            try:
                position, _ = joint_state_to_vector(message, self.ros_joint_names)
            except MalformedMessageError as error:
                self.get_logger().warning(f"refused command on {topic}: {error}", throttle_duration_sec=1.0)
                with self._lock:
                    self.rejected[topic] += 1
                return
            with self._lock:
                self._target[7 * arm_index : 7 * arm_index + 7] = position
                self.commands_received += 1

        return receive

    def _reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        done, result = threading.Event(), []
        self._reset_requests.put((int(read(self, "seed")), done, result))
        answered = done.wait(5.0)
        response.success, response.message = (
            result[0] if answered else (False, "the simulation thread did not answer within 5 s")
        )
        return response

    def _publish_diagnostics(self) -> None:
        with self._lock:
            rejected = dict(self.rejected)
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if rejected else DiagnosticStatus.OK,
            name=f"{self.get_name()}: commands",
            message=f"{sum(rejected.values())} malformed commands refused" if rejected else "ok",
            hardware_id=f"mujoco:{self.embodiment.name}",
        )
        status.values = [KeyValue(key=f"rejected {topic}", value=str(n)) for topic, n in sorted(rejected.items())]
        status.values.append(KeyValue(key="sim_time_s", value=f"{self.sim_time:.3f}"))
        array = DiagnosticArray(status=[status])
        array.header.stamp = seconds_to_stamp(self._now())
        self._diagnostics.publish(array)

    def close(self) -> None:
        """Stop the simulation and camera threads (each releases what it made on its own thread)."""
        self._stop.set()
        self._thread.join(10.0)
        camera_thread = getattr(self, "_camera_thread", None)
        if camera_thread is not None:
            camera_thread.join(10.0)


class _Mailbox:
    """One slot between two threads: `put` replaces what was not taken yet (a late renderer skips frames rather
    than falling behind), `take` waits for something new."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item = None

    def put(self, item) -> None:
        with self._condition:
            self._item = item
            self._condition.notify()

    def take(self, timeout: float):
        with self._condition:
            if self._item is None:
                self._condition.wait(timeout)
            item, self._item = self._item, None
            return item


USAGE = """usage: ros2 run eva_runtime sim_robot_node --ros-args -p embodiment_file:=<yaml> [-p name:=value ...]

The MuJoCo bimanual robot behind the vendor topics (follower states, cameras, commands). Parameters:
"""


def main(args: list[str] | None = None) -> int:
    from eva_runtime.ros.node_main import run_node

    return run_node(args, USAGE, SIM_ROBOT_PARAMETERS, SimRobotNode, 1, lambda node: node.close())


if __name__ == "__main__":
    sys.exit(main())
