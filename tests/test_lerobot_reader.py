"""LeRobotDataset v3.0 input: detection, episode listing, reading back our own export, refusal of broken datasets,
the dataset digest, and IDM training straight from a LeRobot directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eva_runtime.embodiment import load_embodiment
from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.dataset import load_episodes
from eva_runtime.idm.train import TrainSettings, train_idm
from eva_runtime.records.hdf5_episodes import Episode, episode_path, list_episodes, write_episode
from eva_runtime.records.lerobot_episodes import lerobot_episode_refs
from eva_runtime.records.lerobot_export import export_lerobot_v3
from eva_runtime.records.lerobot_meta import LeRobotDatasetError, is_lerobot_v3, lerobot_digest
from eva_runtime.records.lerobot_reader import read_lerobot_episode

REPO = Path(__file__).resolve().parents[1]
JOINTS = load_embodiment(REPO / "calibration" / "aloha_sim.yaml").joint_names
CAMERAS = ("cam_high", "cam_left_wrist")
SIZE, FRAMES, FPS = 32, 12, 12.5
EPISODES = 3


def smooth_frames(n: int, phase: float) -> np.ndarray:
    """Low-frequency gradients that change every frame (lossy mp4v keeps them within a few grey levels)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    frames = [
        np.stack(
            [
                128 + 90 * np.sin(x / SIZE * np.pi + phase + 0.3 * t),
                128 + 90 * np.cos(y / SIZE * np.pi + phase),
                40 + 2 * (x + y) + 8 * t,
            ],
            axis=-1,
        )
        for t in range(n)
    ]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def make_episode(rng: np.random.Generator, index: int) -> Episode:
    return Episode(
        images={cam: smooth_frames(FRAMES, phase=1.1 * c + 2.3 * index) for c, cam in enumerate(CAMERAS)},
        qpos=rng.normal(size=(FRAMES, len(JOINTS))),
        action=rng.normal(size=(FRAMES, len(JOINTS))),
        qvel=None,
        fps=FPS,
        embodiment="aloha_sim",
        task="transfer_cube",
        instruction=f"move the cube {index}",
        joint_names=JOINTS,
    )


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Episode]]:
    """(HDF5 directory, its LeRobot v3 export, the source episodes): built once, never modified by tests."""
    base = tmp_path_factory.mktemp("lerobot_reader")
    rng = np.random.default_rng(7)
    episodes = [make_episode(rng, i) for i in range(EPISODES)]
    paths = [write_episode(episode_path(base / "hdf5", i), ep) for i, ep in enumerate(episodes)]
    root = export_lerobot_v3(paths, base / "lerobot", repo_id="eva/transfer-cube", robot_type="aloha_sim")
    return base / "hdf5", root, episodes


@pytest.fixture
def copy(datasets, tmp_path: Path) -> Path:
    """A private copy of the export, for tests that break it."""
    return Path(shutil.copytree(datasets[1], tmp_path / "copy"))


def test_detection(datasets, tmp_path: Path) -> None:
    hdf5, root, _ = datasets
    assert is_lerobot_v3(root)
    assert not is_lerobot_v3(hdf5)
    assert not is_lerobot_v3(tmp_path / "nowhere")
    (tmp_path / "old" / "meta").mkdir(parents=True)
    (tmp_path / "old" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    assert not is_lerobot_v3(tmp_path / "old")


def test_episode_refs(datasets) -> None:
    _, root, _ = datasets
    refs = lerobot_episode_refs(root)
    assert [ref.index for ref in refs] == list(range(EPISODES))
    assert [ref.name for ref in refs] == [f"episode_{i}" for i in range(EPISODES)]
    assert [(ref.dataset_from_index, ref.dataset_to_index, ref.length) for ref in refs] == [
        (i * FRAMES, (i + 1) * FRAMES, FRAMES) for i in range(EPISODES)
    ]
    for i, ref in enumerate(refs):
        assert ref.data_path == Path("data/chunk-000/file-000.parquet")
        assert [(v.camera, v.path) for v in ref.videos] == [
            (cam, Path(f"videos/observation.images.{cam}/chunk-000/file-000.mp4")) for cam in CAMERAS
        ]
        for video in ref.videos:
            assert video.from_timestamp == pytest.approx(i * FRAMES / FPS)
            assert video.to_timestamp == pytest.approx((i + 1) * FRAMES / FPS)


def test_episodes_read_back_like_their_source(datasets) -> None:
    _, root, episodes = datasets
    for ref, source in zip(lerobot_episode_refs(root), episodes, strict=True):
        episode = read_lerobot_episode(root, ref)
        assert episode.length == source.length == FRAMES
        np.testing.assert_allclose(episode.qpos, source.qpos, rtol=0, atol=1e-6)
        np.testing.assert_allclose(episode.action, source.action, rtol=0, atol=1e-6)
        assert episode.joint_names == JOINTS
        assert episode.fps == FPS
        assert episode.instruction == episode.task == source.instruction
        assert episode.embodiment == "aloha_sim"
        assert episode.qvel is None and episode.seed is None and episode.success is None
        assert sorted(episode.images) == sorted(CAMERAS)
        for cam in CAMERAS:
            decoded, original = episode.images[cam].astype(np.float64), source.images[cam].astype(np.float64)
            assert decoded.shape == original.shape and episode.images[cam].dtype == np.uint8
            error = np.abs(decoded - original).mean(axis=(1, 2, 3))
            assert error.max() < 8.0, (ref.index, cam, error)
            # Seeking must land on the episode's own first frame, not a neighbour: every decoded frame is closest
            # to its own source frame among all frames of all episodes (and the channels are RGB, not BGR).
            everything = np.concatenate([ep.images[cam] for ep in episodes]).astype(np.float64)
            for t in range(FRAMES):
                nearest = np.abs(everything - decoded[t]).mean(axis=(1, 2, 3)).argmin()
                assert nearest == ref.index * FRAMES + t, (ref.index, cam, t)
            assert np.abs(decoded[0][..., ::-1] - original[0]).mean() > 2 * error[0]


def test_joints_only(datasets) -> None:
    _, root, episodes = datasets
    episode = read_lerobot_episode(root, lerobot_episode_refs(root)[2], load_images=False)
    assert episode.images == {}
    np.testing.assert_allclose(episode.action, episodes[2].action, rtol=0, atol=1e-6)


def test_missing_data_file_is_named(copy: Path) -> None:
    data = copy / "data" / "chunk-000" / "file-000.parquet"
    refs = lerobot_episode_refs(copy)
    data.unlink()
    with pytest.raises(ValueError, match="file missing") as info:
        lerobot_episode_refs(copy)
    assert str(data) in str(info.value)
    with pytest.raises(ValueError, match="file missing") as info:
        read_lerobot_episode(copy, refs[0])
    assert str(data) in str(info.value)


def test_missing_video_is_named(copy: Path) -> None:
    video = copy / "videos" / "observation.images.cam_left_wrist" / "chunk-000" / "file-000.mp4"
    video.unlink()
    with pytest.raises(LeRobotDatasetError, match="file missing") as info:
        lerobot_episode_refs(copy)
    assert str(video) in str(info.value) and "observation.images.cam_left_wrist" in str(info.value)


def test_short_video_is_refused(copy: Path) -> None:
    # A video with fewer frames than the metadata promises: the last episode cannot be decoded in full.
    refs = lerobot_episode_refs(copy)
    video = copy / "videos" / "observation.images.cam_high" / "chunk-000" / "file-000.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIZE, SIZE))
    for frame in smooth_frames(2 * FRAMES + 3, 0.0):
        writer.write(frame)
    writer.release()
    read_lerobot_episode(copy, refs[0])  # the first two episodes are still there
    with pytest.raises(ValueError, match="frames") as info:
        read_lerobot_episode(copy, refs[2])
    assert str(video) in str(info.value) and "observation.images.cam_high" in str(info.value)


def test_missing_feature_is_named(copy: Path) -> None:
    info_path = copy / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    del info["features"]["action"]
    info_path.write_text(json.dumps(info))
    with pytest.raises(LeRobotDatasetError, match="missing feature") as error:
        lerobot_episode_refs(copy)
    assert str(info_path) in str(error.value) and "features.action" in str(error.value)


def test_inconsistent_episode_metadata_is_named(copy: Path) -> None:
    path = copy / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    lengths = table.column("length").to_pylist()
    lengths[1] += 1
    pq.write_table(
        table.set_column(table.schema.get_field_index("length"), "length", pa.array(lengths, pa.int64())), path
    )
    with pytest.raises(LeRobotDatasetError, match="episode 1") as info:
        lerobot_episode_refs(copy)
    assert str(path) in str(info.value)


def test_frame_count_mismatch_in_data_is_named(copy: Path) -> None:
    # Episode metadata and frame table disagree: episode 1 claims frames its rows do not have.
    refs = lerobot_episode_refs(copy)
    data = copy / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(data)
    pq.write_table(table.slice(0, 2 * FRAMES - 1), data)
    with pytest.raises(LeRobotDatasetError, match=f"{FRAMES - 1} frames") as info:
        read_lerobot_episode(copy, refs[1])
    assert str(data) in str(info.value) and "episode 1" in str(info.value)


def test_digest(datasets, copy: Path, tmp_path: Path) -> None:
    _, root, _ = datasets
    digest = lerobot_digest(root)
    assert len(digest) == 64 and lerobot_digest(copy) == digest  # a copy elsewhere keeps it
    (copy / "README.md").write_text("edited card")
    assert lerobot_digest(copy) == digest  # the card is not training data
    tasks = copy / "meta" / "tasks.parquet"
    tasks.write_bytes(tasks.read_bytes() + b"\0")
    assert lerobot_digest(copy) != digest
    with pytest.raises(ValueError, match="no dataset files"):
        lerobot_digest(tmp_path / "empty")


def test_load_episodes_accepts_both_sources(datasets) -> None:
    hdf5, root, _ = datasets
    config = IdmConfig(joint_names=JOINTS, cameras=("cam_high",), image_size=(SIZE, SIZE), fps=FPS)
    ref = lerobot_episode_refs(root)[1]
    from_hdf5, from_lerobot = load_episodes([list_episodes(hdf5)[1], (root, ref)], config)
    assert from_lerobot.path == root / "episode_1"
    assert from_lerobot.step == from_hdf5.step == 1
    np.testing.assert_allclose(from_lerobot.actions, from_hdf5.actions, rtol=0, atol=1e-6)
    assert np.abs(from_lerobot.video.astype(float) - from_hdf5.video.astype(float)).mean() < 8.0


def test_train_idm_on_a_lerobot_dataset(datasets, tmp_path: Path) -> None:
    _, root, _ = datasets
    config = IdmConfig(
        joint_names=JOINTS,
        cameras=("cam_high",),
        image_size=(SIZE, SIZE),
        fps=FPS,
        width=8,
        keypoints=8,
        hidden=(32, 16),
    )
    settings = TrainSettings(
        data=root, out=tmp_path / "run", steps=4, eval_every=2, batch_size=4, held_out=0.34, threads=1
    )
    _, history = train_idm(settings, config)
    assert [report["step"] for report in history] == [2, 4]
    assert history[-1]["validation"]["samples"] == FRAMES  # one whole episode held out
    assert (settings.out / "last.safetensors").is_file()
    split = json.loads((settings.out / "split.json").read_text())
    assert len(split["validation"]) == 1 and len(split["train"]) == 2
    assert sorted(split["train"] + split["validation"]) == [f"episode_{i}" for i in range(EPISODES)]
    # Resuming checks the LeRobot digest like the HDF5 one: the same data resumes, nothing to do at the last step.
    _, resumed = train_idm(settings, config, resume=True)
    assert resumed == history


def test_export_parity_inputs_come_from_a_lerobot_dataset_too(datasets, tmp_path: Path) -> None:
    from eva_runtime.idm.export import export_idm, parity_batch_from_data

    hdf5_dir, root, _ = datasets
    config = IdmConfig(
        joint_names=JOINTS, cameras=("cam_high",), image_size=(SIZE, SIZE), fps=FPS, width=8, keypoints=8, hidden=(32,)
    )
    settings = TrainSettings(data=root, out=tmp_path / "run", steps=2, eval_every=2, batch_size=4, held_out=0.34)
    train_idm(settings, config)
    from_lerobot = parity_batch_from_data(config.to_json(), root, count=6)
    from_hdf5 = parity_batch_from_data(config.to_json(), hdf5_dir, count=6)
    assert from_lerobot.shape == from_hdf5.shape == (6, config.input_channels, SIZE, SIZE)
    assert np.abs(from_lerobot - from_hdf5).mean() < 8  # the same frames, through a lossy video codec
    report = export_idm(settings.out / "last.safetensors", tmp_path / "idm.onnx", from_lerobot)
    assert report.max_abs_difference <= 1e-4 and report.samples == 6


def test_train_idm_refuses_older_lerobot(tmp_path: Path) -> None:
    (tmp_path / "old" / "meta").mkdir(parents=True)
    (tmp_path / "old" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    settings = TrainSettings(data=tmp_path / "old", out=tmp_path / "run", steps=1)
    with pytest.raises(ValueError, match=r"version v2\.1"):
        train_idm(settings, IdmConfig(joint_names=JOINTS))
