"""Frames that are not square (`--image-size HxW`): parsed once for every command, and carried undistorted through
the video cache, the IDM and the tiny Wan world model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from eva_runtime.cli import app
from eva_runtime.cli.options import FrameSize, frame_size
from eva_runtime.embodiment import load_embodiment
from eva_runtime.idm.windows import resize_video
from tests.wan_helpers import INSTRUCTION, write_video_episodes

runner = CliRunner()
JOINTS = load_embodiment(Path(__file__).resolve().parents[1] / "calibration" / "aloha_sim.yaml").joint_names


@given(st.integers(8, 1024), st.integers(8, 1024), st.sampled_from(["x", "X"]))
def test_height_by_width_parses_to_that_size(height: int, width: int, separator: str) -> None:
    assert frame_size(f"{height}{separator}{width}") == FrameSize(height, width)
    assert frame_size(str(height)).hw == (height, height)
    assert frame_size(str(FrameSize(height, width))) == FrameSize(height, width)  # how --help shows a default


@pytest.mark.parametrize("text", ["", "x", "64x", "x64", "7", "64x4", "64x112x3", "-64", "sixty", "64.5"])
def test_what_is_not_a_frame_size_is_refused_with_the_form_it_takes(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="HEIGHTxWIDTH"):
        frame_size(text)


def wide_video(frames: int, start: int) -> np.ndarray:
    """A 38x64 camera (as a cropped `cam_high` is wider than tall) with a red square moving across it."""
    video = np.full((frames, 38, 64, 3), 90, np.uint8)
    for t in range(frames):
        x = (start + t) % 52
        video[t, 16:22, x : x + 6] = (220, 30, 30)
    return video


def write_wide_episodes(directory: Path, count: int, frames: int = 36) -> Path:
    return write_video_episodes(directory, [wide_video(frames, start=i % 7) for i in range(count)], JOINTS)


def test_the_video_cache_keeps_a_wide_camera_wide(tmp_path: Path) -> None:
    from eva_runtime.training.video_cache import load_video_cache

    data = write_wide_episodes(tmp_path / "data", count=2)
    out = tmp_path / "cache.npz"
    result = runner.invoke(
        app, ["train", "world-model-cache", "--data", str(data), "--out", str(out), "--image-size", "16x32"]
    )
    assert result.exit_code == 0, result.output
    cache = load_video_cache(out)
    assert cache.videos[0].frames.shape[1:] == (16, 32, 3)
    expected = resize_video(wide_video(36, start=0)[::2], (16, 32))
    assert np.array_equal(cache.videos[0].frames, expected)


def test_a_bad_frame_size_exits_2_naming_the_option(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "world-model-cache",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "c.npz"),
            "--image-size",
            "16x",
        ],
    )
    assert result.exit_code == 2
    assert "image-size" in result.output and not (tmp_path / "c.npz").exists()


def test_a_wide_idm_trains_on_wide_frames(tmp_path: Path) -> None:
    from eva_runtime.idm.checkpoint import load_checkpoint

    data = write_wide_episodes(tmp_path / "data", count=4)
    out = tmp_path / "idm"
    arguments = ["train", "idm", "--data", str(data), "--out", str(out), "--image-size", "16x32", "--steps", "2"]
    result = runner.invoke(app, [*arguments, "--batch-size", "4", "--eval-every", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    model = load_checkpoint(out / "last.safetensors")[0]
    assert tuple(model.config.image_size) == (16, 32)


def test_a_wide_world_model_imagines_wide_frames(tmp_path: Path) -> None:
    from eva_runtime.world_model.protocol import RolloutRequest
    from eva_runtime.world_model.wan.backend import load_wan_world_model
    from eva_runtime.world_model.wan.model_files import verify_hashes

    data = write_wide_episodes(tmp_path / "data", count=11)
    out = tmp_path / "base"
    arguments = ["train", "world-model-base", "--data", str(data), "--out", str(out), "--image-size", "16x32"]
    result = runner.invoke(app, [*arguments, "--vae-steps", "2", "--vae-finetune-steps", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert verify_hashes(out)
    assert json.loads((out / "eva_world_model.json").read_text())["config"]["image_size"] == [16, 32]
    model = load_wan_world_model({"base": str(out), "steps": 1})
    rollout = model.rollout(RolloutRequest({"cam_high": wide_video(1, 0)}, INSTRUCTION, 9, seed=0))
    assert rollout.frames["cam_high"].shape == (1, 9, 16, 32, 3)
