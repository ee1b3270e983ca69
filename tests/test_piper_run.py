"""`eva run --robot piper` end to end, with every part real except the hardware: two Piper arms on python-can
virtual buses speaking the SDK's protocol, a camera that is a recorded video read by OpenCV, a world model served
over the network (`eva serve world-model`'s server), the real IDM (ONNX), gate, executor and safety filter, and the
SQLite outcome log. The same deployment code as the simulator drives the arms."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eva_runtime.bundle import create_bundle
from eva_runtime.cli import app
from eva_runtime.embodiment import load_embodiment
from eva_runtime.idm.export import export_idm
from eva_runtime.idm.train import train_idm
from eva_runtime.records.hdf5_episodes import episode_path, list_episodes, read_episode, write_episode
from eva_runtime.records.outcome_log import OutcomeLog
from eva_runtime.robots.opencv_cameras import OpenCvCameras, parse_camera_sources
from eva_runtime.robots.piper.virtual_arm import VirtualPiperArm
from eva_runtime.world_model.serving.server import WorldModelServer
from tests.conftest import CALIBRATION
from tests.fakes import ShiftingWorldModel
from tests.idm_helpers import tiny_config, tiny_settings, write_synthetic_dataset

COBOT_FILE = CALIBRATION / "cobot_magic.yaml"
COBOT = load_embodiment(COBOT_FILE)
START = (0, 5000, -10000, 2000, -3000, 4000)  # 0.001 degree, inside every joint's range


def recorded_camera(path: Path, frames: int = 30, size: int = 64) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (size, size))
    rng = np.random.default_rng(0)
    for index in range(frames):
        image = np.full((size, size, 3), 90, np.uint8)
        image[20:30, (index % 40) : (index % 40) + 8] = (40, 40, 200)  # BGR: a red block moving right
        writer.write(np.clip(image + rng.integers(0, 6, image.shape), 0, 255).astype(np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def cobot_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle for the CobotMagic: a tiny IDM trained on synthetic frames with the robot's joint names."""
    synthetic = tmp_path_factory.mktemp("piper_synthetic")
    data = tmp_path_factory.mktemp("piper_data")
    for index, path in enumerate(write_synthetic_dataset(synthetic, episodes=3, frames=12)):
        write_episode(episode_path(data, index), dataclasses.replace(read_episode(path), joint_names=COBOT.joint_names))
    assert len(list_episodes(data)) == 3
    settings = tiny_settings(data, tmp_path_factory.mktemp("piper_run"), steps=2, eval_every=2, held_out=0.34)
    train_idm(settings, tiny_config(joint_names=COBOT.joint_names))
    onnx = export_idm(settings.out / "last.safetensors", tmp_path_factory.mktemp("piper_onnx") / "idm.onnx").path
    bundle = tmp_path_factory.mktemp("piper_bundle") / "bundle"
    world_model = {"kind": "oracle", "id": "oracle:transfer_cube", "fps": 12.5, "horizon": 9}
    create_bundle(bundle, onnx, COBOT_FILE, world_model, {"p0": 50.0})
    return bundle


def test_a_recorded_video_is_a_camera_that_plays_and_starts_over(tmp_path: Path) -> None:
    video = recorded_camera(tmp_path / "cam.avi", frames=5)
    with OpenCvCameras({"cam_high": str(video)}) as cameras:
        import time

        deadline = time.monotonic() + 5.0
        stamps = set()
        while time.monotonic() < deadline and len(stamps) < 8:  # more frames than the file has: it looped
            frame = cameras.latest("cam_high")
            if frame is not None:
                stamps.add(frame.stamp)
            time.sleep(0.01)
        assert len(stamps) >= 8
        assert frame.image.shape == (64, 64, 3) and frame.image.dtype == np.uint8
        assert frame.image[25, :, 0].max() > 150  # red in RGB order (the file is BGR)
    with pytest.raises(RuntimeError, match="cannot open"):
        OpenCvCameras({"cam_high": str(tmp_path / "missing.avi")}).start()
    assert parse_camera_sources(["cam_high=0", "cam_left_wrist=/dev/video2"]) == {
        "cam_high": 0,
        "cam_left_wrist": "/dev/video2",
    }
    with pytest.raises(ValueError, match="NAME=SOURCE"):
        parse_camera_sources(["cam_high"])


def test_eva_run_drives_the_piper_arms_through_the_same_loop_and_logs_the_episode(
    cobot_bundle: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    left_channel, right_channel = f"run-{tag}-left", f"run-{tag}-right"
    video = recorded_camera(tmp_path / "cam_high.avi")
    server = WorldModelServer(ShiftingWorldModel(cameras=("cam_high",)), port=0)
    port, stop = server.run_in_thread()
    left = VirtualPiperArm(left_channel, joints=START, gripper=20000).start()
    right = VirtualPiperArm(right_channel, joints=START, gripper=40000).start()
    log = tmp_path / "piper.db"
    arguments = ["run", "--robot", "piper", "--bundle", str(cobot_bundle), "--embodiment", str(COBOT_FILE)]
    arguments += ["--world-model-url", f"ws://127.0.0.1:{port}", "--can-interface", "virtual"]
    arguments += ["--can-left", left_channel, "--can-right", right_channel, "--camera", f"cam_high={video}"]
    arguments += ["--instruction", "pick up the red block", "--episodes", "1", "--episode-seconds", "4"]
    arguments += ["--log", str(log)]
    try:
        result = CliRunner().invoke(app, arguments)
    finally:
        stop()
        left.stop()
        right.stop()
    assert result.exit_code == 0, result.output
    with OutcomeLog(log, read_only=True) as opened:
        records = opened.episodes()
    assert len(records) == 1 and records[0].outcome == "aborted" and records[0].labelled_by == "automatic"
    assert records[0].model_id.startswith(f"remote:ws://127.0.0.1:{port}+idm:")
    assert records[0].instruction == "pick up the red block"
    # Plans came from the served model through the IDM and the gate (the first one after the planner started).
    assert records[0].planning_latency_ms is not None and records[0].planning_latency_ms["count"] >= 1
    assert records[0].executability is not None
    # Filtered commands reached both arms as joint-control frames, tick after tick (whether the plan moved them
    # depends on when the first plan landed, which is timing, not behaviour).
    joint_frames = [sum(1 for can_id, _ in arm.received if can_id in (0x155, 0x156, 0x157)) for arm in (left, right)]
    assert min(joint_frames) >= 100, joint_frames
    # The arms were enabled in CAN mode and never sent the reset that drops them.
    assert left.enabled and right.enabled and left.reset_requests == 0 and right.reset_requests == 0
    assert '"episodes": 1' in result.output


def test_the_oracle_and_missing_inputs_are_refused_before_anything_moves(cobot_bundle: Path, tmp_path: Path) -> None:
    base = ["run", "--robot", "piper", "--bundle", str(cobot_bundle), "--embodiment", str(COBOT_FILE)]
    base += ["--can-interface", "virtual", "--log", str(tmp_path / "x.db")]
    oracle = CliRunner().invoke(app, [*base, "--instruction", "x", "--camera", "cam_high=0"])
    assert oracle.exit_code == 2 and "oracle" in oracle.output
    remote = ["--world-model-url", "ws://127.0.0.1:9"]
    no_camera = CliRunner().invoke(app, [*base, *remote, "--instruction", "x"])
    assert no_camera.exit_code == 2 and "cam_high" in no_camera.output
    no_instruction = CliRunner().invoke(app, [*base, *remote, "--camera", "cam_high=0"])
    assert no_instruction.exit_code == 2 and "--instruction" in no_instruction.output
    assert not (tmp_path / "x.db").exists()
