"""The recorder node in-process with real rclpy: the simulated robot publishes follower states and cameras, a probe
plays the operator's leader arms, and record_node writes vendor-layout HDF5 episodes between ~/start and ~/stop.

The files are opened with plain h5py the way the ACT and AgileX loaders open them, and read back through
`read_episode`. Also: a camera that stops makes samples skipped and counted (never a stale frame written), an
episode without frames is refused and not written, a frame of the wrong size is refused and counted, the next
episode takes the next index, `max_frames` ends sampling, and start / stop refuse what they must.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from eva_runtime.embodiment import load_embodiment
from eva_runtime.records.hdf5_episodes import list_episodes, read_episode
from eva_runtime.ros.messages import rgb_to_image, vector_to_joint_state
from eva_runtime.ros.spinning import BackgroundSpin
from eva_runtime.sim.bimanual_sim import START_POSE
from tests.ros_graph import BUNDLE, Probe, domain_id, wait_for

EMBODIMENT_FILE = BUNDLE / "embodiment.yaml"
EMBODIMENT = load_embodiment(EMBODIMENT_FILE)
STATUS = "record_node: recording"
MAX_AGE_S = 1.0
# The operator's leader arms, held still: every recorded action must be exactly this pose (as float32).
LEADER = START_POSE + np.r_[[0.05, 0.02, -0.03, 0.01, 0.02, -0.01, 0.0], [-0.04, 0.01, 0.02, -0.02, 0.0, 0.03, -0.1]]
STOPPED = re.compile(r"wrote (\S+): (\d+) frames at 5 Hz, (\d+) samples skipped, (\d+) messages refused(.*)")


class RecordGraph:
    """sim_robot_node (128 x 128 cameras at 5 Hz) + record_node (5 Hz) + probe with leader arms at 20 Hz."""

    def __init__(self) -> None:
        from eva_runtime.ros.record_node import RecordNode
        from eva_runtime.ros.sim_robot_node import SimRobotNode

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id(10))
        self.nodes: list = []
        self._stop = threading.Event()
        try:
            sim = {"embodiment_file": str(EMBODIMENT_FILE), "camera_rate_hz": 5.0, "publish_privileged_state": False}
            self.sim = SimRobotNode(context=self.context, parameter_overrides=_overrides(sim))
            self.nodes.append(self.sim)
            recorder = {"embodiment_file": str(EMBODIMENT_FILE), "fps": 5.0, "diagnostics_rate_hz": 5.0}
            recorder |= {"max_input_age_s": MAX_AGE_S, "task": "transfer_cube", "instruction": "hand the cube over"}
            self.recorder = RecordNode(context=self.context, parameter_overrides=_overrides(recorder))
            self.nodes.append(self.recorder)
            self.probe = Probe(self.context, [])
            self.nodes.append(self.probe)
        except BaseException:
            self.close()
            raise
        self.images = self.probe.create_publisher(Image, "/camera_f/color/image_raw", qos_profile_sensor_data)
        # Each node on its own thread with its production executor (single-threaded for all three): one
        # MultiThreadedExecutor spun hot and starved the simulated robot's thread (docs/ros.md, "Rates").
        self.executors = []
        for node in self.nodes:
            executor = SingleThreadedExecutor(context=self.context)
            executor.add_node(node)
            self.executors.append(BackgroundSpin(executor).start())
        self._threads = [threading.Thread(target=self._leader_arms, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _leader_arms(self) -> None:
        # Classic convention: the follower firmware obeys these topics too, as in the vendor's collection mode.
        names = EMBODIMENT.topics.joint_names
        while not self._stop.wait(0.05):
            for part, topic in ((slice(0, 7), "/master/joint_left"), (slice(7, 14), "/master/joint_right")):
                self.probe.publisher(topic).publish(vector_to_joint_state(LEADER[part], names, 0.0))

    def status(self) -> dict:
        return self.probe.diagnostics.get(STATUS, {})

    def count(self, key: str) -> int:
        return int(self.status().get(key, 0))

    def start(self) -> tuple[bool, str]:
        # Reports from before the last stop would answer the next waits: wait for one that says idle.
        wait_for(lambda: self.status().get("recording") == "False", 15.0, "an idle recorder report")
        return self.probe.trigger("/record_node/start")

    def stop(self) -> tuple[bool, str]:
        return self.probe.trigger("/record_node/stop")

    def close(self) -> None:
        self._stop.set()
        for thread in getattr(self, "_threads", ()):
            thread.join(10.0)
        for spin in getattr(self, "executors", ()):
            spin.stop()  # joined before the nodes are destroyed (eva_runtime/ros/spinning.py says why)
        for node in reversed(self.nodes):
            if hasattr(node, "close"):
                node.close()
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _overrides(values: dict) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in values.items()]


@pytest.fixture
def graph() -> RecordGraph:
    """A fresh graph per test: a fresh-clone CI run saw one shared graph's inputs all go stale from its second test
    on (cause not found yet), which then failed every later test."""
    graph = RecordGraph()
    try:
        wait_for(lambda: graph.status() and "stale" not in graph.status()["message"], 60.0, "fresh inputs")
        yield graph
    finally:
        graph.close()


def test_start_and_stop_refuse_what_they_must(graph: RecordGraph, tmp_path: Path) -> None:
    from eva_runtime.ros.parameters import RECORD_PARAMETERS

    declared = set(graph.recorder._parameters) - {"use_sim_time", "start_type_description_service"}
    assert declared == {spec.name for spec in RECORD_PARAMETERS}
    ok, message = graph.stop()
    assert not ok and "not recording" in message
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    graph.probe.set_parameters("record_node", out_dir=str(blocker / "episodes"))
    ok, message = graph.start()
    assert not ok and "not writable" in message and str(blocker) in message
    graph.probe.set_parameters("record_node", out_dir=str(tmp_path / "episodes"), compression="zip")
    ok, message = graph.start()
    assert not ok and "compression" in message
    graph.probe.set_parameters("record_node", compression="")
    assert graph.status()["recording"] == "False"


def test_an_episode_is_written_in_the_vendor_layout(graph: RecordGraph, tmp_path: Path) -> None:
    out_dir = tmp_path / "episodes"
    graph.probe.set_parameters("record_node", out_dir=str(out_dir))
    ok, message = graph.start()
    assert ok and message.startswith(f"recording into {out_dir} at 5 Hz"), message
    ok, message = graph.probe.trigger("/record_node/start")  # directly: start() first waits for an idle report
    assert not ok and "already recording" in message
    wait_for(lambda: graph.count("frames") >= 5, 60.0, "five sampled frames")

    def refused_a_small_frame() -> bool:  # sent until one arrived: the first may precede discovery
        graph.images.publish(rgb_to_image(np.zeros((64, 64, 3), np.uint8), 0.0))
        return graph.count("refused /camera_f/color/image_raw") >= 1

    wait_for(refused_a_small_frame, 15.0, "a 64 x 64 frame refused")
    assert "expected 128x128" in graph.status()["last /camera_f/color/image_raw"]
    ok, message = graph.stop()
    match = STOPPED.fullmatch(message)
    assert ok and match, message
    path, frames, refused = Path(match[1]), int(match[2]), int(match[4])
    assert path == out_dir / "episode_0.hdf5" and frames >= 5 and refused >= 1
    assert list_episodes(out_dir) == [path]  # only the episode: no temporary file left behind

    with h5py.File(path, "r") as root:  # as ACT's and AgileX's utils.py open it
        assert isinstance(root.attrs["sim"], bool | np.bool_) and not root.attrs["sim"]
        assert not root.attrs["compress"] and root.attrs["qvel_measured"] and root.attrs["effort_measured"]
        for key in ("/observations/qpos", "/observations/qvel", "/observations/effort", "/action"):
            assert root[key].shape == (frames, 14) and root[key].dtype == np.float32, key
        for camera in ("cam_high", "cam_left_wrist", "cam_right_wrist"):
            images = root[f"/observations/images/{camera}"]
            assert images.shape == (frames, 128, 128, 3) and images.dtype == np.uint8
            assert images[frames - 1].std() > 0  # a rendered scene, not a blank frame
        action, qpos = root["/action"][()], root["/observations/qpos"][()]
    assert np.array_equal(action, np.tile(LEADER.astype(np.float32), (frames, 1)))
    low, high = EMBODIMENT.position_limits()
    assert np.all(qpos >= low - 0.05) and np.all(qpos <= high + 0.05)

    episode = read_episode(path)
    assert (episode.length, episode.sim, episode.fps, episode.embodiment) == (frames, False, 5.0, EMBODIMENT.name)
    assert (episode.task, episode.instruction) == ("transfer_cube", "hand the cube over")
    assert episode.joint_names == EMBODIMENT.joint_names and episode.effort is not None
    assert np.allclose(episode.action, LEADER, atol=1e-6)


def test_a_stopped_camera_skips_samples_and_an_episode_without_frames_is_refused(
    graph: RecordGraph, tmp_path: Path
) -> None:
    out_dir = tmp_path / "episodes"
    graph.probe.set_parameters("record_node", out_dir=str(out_dir))
    assert graph.start()[0]
    wait_for(lambda: graph.count("frames") >= 2, 60.0, "two sampled frames")
    graph.probe.set_parameters("sim_robot_node", cameras_enabled=False)
    try:
        wait_for(lambda: graph.count("skipped") >= 2, 30.0, "samples skipped while the cameras are stopped")
        frames_while_stopped = graph.count("frames")
        assert "stale: cam_high" in graph.status()["message"] and graph.status()["level"] == 1
        ok, message = graph.stop()
        match = STOPPED.fullmatch(message)
        assert ok and match and int(match[3]) >= 2, message
        assert "last skipped: stale or missing: cam_high" in match[5]
        # Sampling added no frame once the cameras went stale: the skipped samples wrote nothing.
        assert int(match[2]) == frames_while_stopped

        ok, message = graph.start()  # the cameras are still stopped
        assert ok and "no fresh message yet on cam_high" in message, message
        wait_for(lambda: graph.count("skipped") >= 2, 30.0, "skipped samples")
        ok, message = graph.stop()
        assert not ok and "no frame was sampled, nothing written" in message, message
        assert list_episodes(out_dir) == [out_dir / "episode_0.hdf5"]
    finally:
        graph.probe.set_parameters("sim_robot_node", cameras_enabled=True)
    wait_for(lambda: "stale" not in graph.status().get("message", "stale"), 30.0, "fresh cameras again")


def test_the_next_episode_takes_the_next_index_and_max_frames_ends_sampling(graph: RecordGraph, tmp_path: Path) -> None:
    out_dir = tmp_path / "episodes"
    graph.probe.set_parameters("record_node", out_dir=str(out_dir), sim=True, max_frames=2)
    try:
        for index in range(2):
            assert graph.start()[0]
            wait_for(lambda: graph.status().get("frame_limit_reached") == "True", 60.0, "the frame limit")
            ok, message = graph.stop()
            match = STOPPED.fullmatch(message)
            assert ok and match and int(match[2]) == 2 and "frame limit 2 reached" in match[5], message
            assert Path(match[1]) == out_dir / f"episode_{index}.hdf5"
    finally:
        graph.probe.set_parameters("record_node", sim=False, max_frames=0)
    with h5py.File(out_dir / "episode_1.hdf5", "r") as root:
        assert root.attrs["sim"] and root["/action"].shape == (2, 14)
    assert read_episode(out_dir / "episode_1.hdf5").sim is True


def test_a_failed_write_keeps_the_episode_until_a_stop_writes_it(graph: RecordGraph, tmp_path: Path) -> None:
    doomed, good = tmp_path / "doomed", tmp_path / "episodes"
    graph.probe.set_parameters("record_node", out_dir=str(doomed), max_frames=2)
    try:
        assert graph.start()[0]
        wait_for(lambda: graph.status().get("frame_limit_reached") == "True", 60.0, "the frame limit")
        doomed.rmdir()
        doomed.write_text("the directory became a file")  # e.g. a disk remounted, a directory removed
        ok, message = graph.stop()
        assert not ok and "episode of 2 frames not written" in message and "call ~/stop again" in message, message
        ok, message = graph.probe.trigger("/record_node/start")
        assert not ok and "not written yet" in message, message
        graph.probe.set_parameters("record_node", out_dir=str(good))
        ok, message = graph.stop()
        assert ok and message.startswith(f"wrote {good / 'episode_0.hdf5'}: 2 frames"), message
    finally:
        graph.probe.set_parameters("record_node", max_frames=0)
    assert read_episode(good / "episode_0.hdf5").length == 2
    ok, message = graph.stop()
    assert not ok and "not recording" in message
