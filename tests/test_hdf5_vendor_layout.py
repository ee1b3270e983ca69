"""Episode files as the vendor loaders see them: ACT (tonyzhaozh/act ``utils.py``) and AgileX (cobot_magic
``aloha-devel/act/utils.py``) open them with plain h5py, so these tests do the same, key for key; plus reading
files of the previous (v1) layout, and a real simulator recording through the project's recorder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eva_runtime.embodiment import load_embodiment
from eva_runtime.records.hdf5_episodes import (
    FORMAT,
    FORMAT_V1,
    Episode,
    EpisodeFileError,
    episode_path,
    list_episodes,
    read_episode,
    write_episode,
)
from eva_runtime.robots.mujoco_robot import MujocoRobot
from eva_runtime.sim.demonstrations import record_demonstrations

from .conftest import CALIBRATION

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
JOINTS = tuple(f"{side}_{j}" for side in ("left", "right") for j in (*(f"j{i}" for i in range(1, 7)), "gripper"))
N, H, W = 9, 12, 16


def make_episode(rng: np.random.Generator, measured: bool = True, sim: bool = True) -> Episode:
    return Episode(
        images={cam: rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8) for cam in CAMERAS},
        qpos=rng.normal(size=(N, 14)),
        action=rng.normal(size=(N, 14)),
        qvel=rng.normal(size=(N, 14)) if measured else None,
        effort=rng.normal(size=(N, 14)) if measured else None,
        fps=25.0,
        embodiment="cobot_magic",
        task="transfer_cube",
        instruction="pick up the cube",
        joint_names=JOINTS,
        seed=3,
        success=True,
        sim=sim,
    )


def act_sample(path: Path, camera_names: tuple[str, ...], start_ts: int) -> dict[str, np.ndarray]:
    """ACT's ``EpisodicDataset.__getitem__`` access, step for step (sim decides the action alignment)."""
    with h5py.File(path, "r") as root:
        is_sim = root.attrs["sim"]
        original_action_shape = root["/action"].shape
        episode_len = original_action_shape[0]
        qpos = root["/observations/qpos"][start_ts]
        qvel = root["/observations/qvel"][start_ts]
        images = {cam: root[f"/observations/images/{cam}"][start_ts] for cam in camera_names}
        first = start_ts if is_sim else max(0, start_ts - 1)
        action = root["/action"][first:]
    padded_action = np.zeros(original_action_shape, dtype=np.float32)
    padded_action[: episode_len - first] = action
    return {"qpos": qpos, "qvel": qvel, "action": padded_action, "images": np.stack([images[c] for c in camera_names])}


def agilex_sample(path: Path, camera_names: tuple[str, ...], start_ts: int) -> dict[str, np.ndarray]:
    """AgileX's ``EpisodicDataset.__getitem__`` without mobile base or depth (the targets are the next frame's qpos)."""
    with h5py.File(path, "r") as root:
        is_compress = root.attrs["compress"]
        assert not is_compress, "AgileX would cv2.imdecode each image row"
        max_action_len = root["/action"].shape[0]
        actions = root["/observations/qpos"][1:]
        actions = np.append(actions, actions[-1][np.newaxis, :], axis=0)
        qpos = root["/observations/qpos"][start_ts]
        images = {cam: root[f"/observations/images/{cam}"][start_ts] for cam in camera_names}
    return {"qpos": qpos, "actions": actions[start_ts:], "length": max_action_len, "images": images}


def norm_stats(paths: list[Path]) -> dict[str, np.ndarray]:
    """``get_norm_stats`` of both loaders: whole qpos, qvel and action per file, stacked across episodes."""
    qpos, qvel, action = [], [], []
    for path in paths:
        with h5py.File(path, "r") as root:
            qpos.append(root["/observations/qpos"][()])
            qvel.append(root["/observations/qvel"][()])
            action.append(root["/action"][()])
    return {"qpos": np.stack(qpos), "qvel": np.stack(qvel), "action": np.stack(action)}


@pytest.mark.parametrize(("measured", "sim"), [(True, True), (False, True), (True, False)])
def test_vendor_access_pattern(tmp_path: Path, measured: bool, sim: bool) -> None:
    ep = make_episode(np.random.default_rng(1), measured=measured, sim=sim)
    path = write_episode(tmp_path / "episode_0.hdf5", ep, compression="gzip")
    with h5py.File(path, "r") as root:
        assert isinstance(root.attrs["sim"], np.bool_) and bool(root.attrs["sim"]) is sim
        assert isinstance(root.attrs["compress"], np.bool_) and not root.attrs["compress"]
        for key in ("/observations/qpos", "/observations/qvel", "/observations/effort", "/action"):
            assert root[key].dtype == np.float32 and root[key].shape == (N, 14), key
        for cam in CAMERAS:
            images = root[f"/observations/images/{cam}"]
            assert images.dtype == np.uint8 and images.shape == (N, H, W, 3) and images.chunks == (1, H, W, 3)
        assert root.attrs["format"] == FORMAT
        assert bool(root.attrs["qvel_measured"]) is measured and bool(root.attrs["effort_measured"]) is measured
        effort = root["/observations/effort"][()]
    np.testing.assert_array_equal(effort, ep.effort.astype(np.float32) if measured else np.zeros((N, 14)))

    start = 4
    act = act_sample(path, CAMERAS, start)
    assert act["qpos"].dtype == act["qvel"].dtype == np.float32 and act["qpos"].shape == (14,)
    np.testing.assert_array_equal(act["qpos"], ep.qpos[start].astype(np.float32))
    first = start if sim else start - 1
    np.testing.assert_array_equal(act["action"][: N - first], ep.action[first:].astype(np.float32))
    assert act["images"].shape == (len(CAMERAS), H, W, 3) and act["images"].dtype == np.uint8
    np.testing.assert_array_equal(act["images"][0], ep.images["cam_high"][start])

    agilex = agilex_sample(path, CAMERAS, start)
    assert agilex["length"] == N and agilex["actions"].dtype == np.float32
    np.testing.assert_array_equal(agilex["actions"][0], ep.qpos[start + 1].astype(np.float32))
    np.testing.assert_array_equal(agilex["images"]["cam_left_wrist"], ep.images["cam_left_wrist"][start])


def test_norm_stats_stack_across_episodes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    paths = [write_episode(tmp_path / f"episode_{i}.hdf5", make_episode(rng, measured=i == 0)) for i in range(3)]
    stats = norm_stats(paths)
    for name, stacked in stats.items():
        assert stacked.shape == (3, N, 14) and stacked.dtype == np.float32, name


def write_v1(path: Path, ep: Episode) -> Path:
    """A file as the v1 writer made it: float64 joints, qvel only when measured, no sim/compress/effort."""
    with h5py.File(path, "w") as f:
        f.require_group("/observations/images")
        for cam, frames in ep.images.items():
            f.create_dataset(f"/observations/images/{cam}", data=frames, chunks=(1, *frames.shape[1:]))
        f.create_dataset("/observations/qpos", data=ep.qpos)
        f.create_dataset("/action", data=ep.action)
        if ep.qvel is not None:
            f.create_dataset("/observations/qvel", data=ep.qvel)
        f.attrs.update(
            {
                "format": FORMAT_V1,
                "fps": ep.fps,
                "embodiment": ep.embodiment,
                "task": ep.task,
                "instruction": ep.instruction,
                "joint_names": json.dumps(list(ep.joint_names)),
                "seed": ep.seed,
                "success": int(ep.success),
            }
        )
    return path


@pytest.mark.parametrize("measured", [True, False])
def test_v1_files_still_read(tmp_path: Path, measured: bool) -> None:
    ep = make_episode(np.random.default_rng(3), measured=measured)
    old = write_v1(episode_path(tmp_path, 0), ep)
    write_episode(episode_path(tmp_path, 1), ep)
    assert list_episodes(tmp_path) == [old, episode_path(tmp_path, 1)]
    back = read_episode(old)
    # v1 stored float64: values come back bit-exact, as before.
    for name in ("qpos", "action"):
        assert getattr(back, name).dtype == np.float64
        np.testing.assert_array_equal(getattr(back, name), getattr(ep, name))
    if measured:
        np.testing.assert_array_equal(back.qvel, ep.qvel)
    else:
        assert back.qvel is None
    assert back.effort is None and back.sim is True and back.seed == 3 and back.success is True
    np.testing.assert_array_equal(back.images["cam_high"], ep.images["cam_high"])
    with h5py.File(old, "a") as f:
        del f["/action"]
    with pytest.raises(EpisodeFileError, match="/action"):
        read_episode(old)


def test_unmeasured_placeholder_must_fit(tmp_path: Path) -> None:
    path = write_episode(tmp_path / "e.hdf5", make_episode(np.random.default_rng(4), measured=False))
    with h5py.File(path, "a") as f:
        del f["/observations/effort"]
        f.create_dataset("/observations/effort", data=np.zeros((N - 1, 14), np.float32))
    with pytest.raises(EpisodeFileError, match=r"/observations/effort.*placeholder"):
        read_episode(path)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=6),
    values=arrays(np.float64, (4, 6, 14), elements=st.floats(-3e38, 3e38, allow_nan=False)),
)
def test_float32_round_trip_property(n: int, values: np.ndarray) -> None:
    """What the vendor loader reads is float32(x); what read_episode returns is that value widened to float64."""
    qpos, action, qvel, effort = (v[:n] for v in values)
    ep = Episode(
        images={},
        qpos=qpos,
        action=action,
        qvel=qvel,
        effort=effort,
        fps=50.0,
        embodiment="aloha_sim",
        task="t",
        instruction="",
        joint_names=JOINTS,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = write_episode(Path(tmp) / "episode_0.hdf5", ep)
        back = read_episode(path)
        with h5py.File(path, "r") as root:
            raw = {name: root[key][()] for name, key in (("qpos", "/observations/qpos"), ("action", "/action"))}
            raw |= {name: root[f"/observations/{name}"][()] for name in ("qvel", "effort")}
    for name, written in (("qpos", qpos), ("action", action), ("qvel", qvel), ("effort", effort)):
        assert raw[name].dtype == np.float32
        np.testing.assert_array_equal(raw[name], written.astype(np.float32))
        assert getattr(back, name).dtype == np.float64
        np.testing.assert_array_equal(getattr(back, name), raw[name].astype(np.float64))


def test_simulator_recording_has_effort_and_sim(tmp_path: Path) -> None:
    robot = MujocoRobot(load_embodiment(CALIBRATION / "aloha_sim.yaml"), "transfer_cube")
    robot.connect()
    try:
        recorded = record_demonstrations(robot, 1, tmp_path, fps=25.0, first_seed=0, max_steps=12)
    finally:
        robot.disconnect()
    path = recorded[0].path
    with h5py.File(path, "r") as root:
        assert bool(root.attrs["sim"]) is True and not root.attrs["compress"]
        assert bool(root.attrs["effort_measured"]) and bool(root.attrs["qvel_measured"])
        effort = root["/observations/effort"][()]
        assert effort.dtype == np.float32 and effort.shape == (6, 14)
        assert root["/action"].shape == root["/observations/qpos"].shape == (6, 14)
    assert np.all(np.isfinite(effort))
    # Holding the arms up against gravity takes torque at the shoulders and elbows: the forces were measured. Frame
    # 0 is the reset instant, where the position servos sit exactly on their target and so exert nothing yet.
    assert np.all(np.abs(effort[1:, [1, 2, 8, 9]]) > 1e-3)
    episode = read_episode(path)
    assert episode.sim is True and episode.effort is not None
    np.testing.assert_array_equal(episode.effort, effort.astype(np.float64))
