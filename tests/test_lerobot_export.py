"""LeRobotDataset v3.0 export: metadata, frame table, episode boundaries, statistics and the concatenated videos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from eva_runtime.records.hdf5_episodes import Episode, EpisodeFileError, episode_path, write_episode
from eva_runtime.records.lerobot_export import export_lerobot_v3

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
JOINTS = tuple(f"{side}_{j}" for side in ("left", "right") for j in (*(f"j{i}" for i in range(1, 7)), "gripper"))
H, W, FPS = 32, 48, 30.0
LENGTHS = (5, 8)


def smooth_frames(n: int, phase: float) -> np.ndarray:
    """Low-frequency gradients (lossy codecs keep them well), different per frame, camera phase and channel."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    frames = [
        np.stack(
            [
                128 + 90 * np.sin(x / W * np.pi + phase + 0.2 * t),
                128 + 90 * np.cos(y / H * np.pi + phase),
                60 + 2 * (x + y) + 5 * t,
            ],
            axis=-1,
        )
        for t in range(n)
    ]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def make_episode(rng: np.random.Generator, n: int, index: int, **kw) -> Episode:
    fields = {
        "images": {cam: smooth_frames(n, phase=1.3 * i + 2.1 * index) for i, cam in enumerate(CAMERAS)},
        "qpos": rng.normal(size=(n, 14)),
        "action": rng.normal(size=(n, 14)),
        "qvel": None,
        "fps": FPS,
        "embodiment": "cobot_magic",
        "task": "fold_towel",
        "instruction": f"fold the towel {index}",
        "joint_names": JOINTS,
    }
    fields.update(kw)
    return Episode(**fields)


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, list[Episode]]:
    rng = np.random.default_rng(3)
    episodes = [make_episode(rng, n, i) for i, n in enumerate(LENGTHS)]
    paths = [write_episode(episode_path(tmp_path / "raw", i), ep) for i, ep in enumerate(episodes)]
    root = export_lerobot_v3(paths, tmp_path / "out" / "ds", repo_id="eva/fold-towel", robot_type="cobot_magic")
    assert root == tmp_path / "out" / "ds"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ds"]  # no build directory left behind
    return root, episodes


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_info_json(exported) -> None:
    root, _ = exported
    info = load_json(root / "meta" / "info.json")
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, sum(LENGTHS), 2)
    assert info["fps"] == 30 and info["robot_type"] == "cobot_magic" and info["splits"] == {"train": "0:2"}
    features = info["features"]
    for key in ("observation.state", "action"):
        assert features[key] == {"dtype": "float32", "shape": [14], "names": list(JOINTS)}
    for cam in CAMERAS:
        video = features[f"observation.images.{cam}"]
        assert video["dtype"] == "video" and video["shape"] == [H, W, 3]
        assert video["names"] == ["height", "width", "channels"]
        assert (video["info"]["video.height"], video["info"]["video.width"], video["info"]["video.fps"]) == (H, W, 30)
        assert (
            root / info["video_path"].format(video_key=f"observation.images.{cam}", chunk_index=0, file_index=0)
        ).is_file()
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64")):
        assert features[key] == {"dtype": dtype, "shape": [1], "names": None}
    assert {"index", "task_index"} <= features.keys()
    assert (root / info["data_path"].format(chunk_index=0, file_index=0)).is_file()


def test_frame_table(exported) -> None:
    root, episodes = exported
    data = pq.read_table(root / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    total = sum(LENGTHS)
    assert len(data["index"]) == total
    assert data["index"] == list(range(total))
    assert data["episode_index"] == [0] * LENGTHS[0] + [1] * LENGTHS[1]
    assert data["frame_index"] == list(range(LENGTHS[0])) + list(range(LENGTHS[1]))
    assert data["task_index"] == [0] * LENGTHS[0] + [1] * LENGTHS[1]
    np.testing.assert_allclose(data["timestamp"], np.array(data["frame_index"]) / FPS, rtol=1e-6)
    for column, field in (("observation.state", "qpos"), ("action", "action")):
        expected = np.concatenate([getattr(ep, field) for ep in episodes]).astype(np.float32)
        np.testing.assert_array_equal(np.array(data[column], dtype=np.float32), expected)


def test_episodes_and_tasks(exported) -> None:
    root, episodes = exported
    eps = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    assert eps["episode_index"] == [0, 1]
    assert eps["length"] == list(LENGTHS)
    assert eps["dataset_from_index"] == [0, LENGTHS[0]]
    assert eps["dataset_to_index"] == [LENGTHS[0], sum(LENGTHS)]
    assert eps["tasks"] == [[ep.instruction] for ep in episodes]
    assert eps["data/chunk_index"] == eps["data/file_index"] == [0, 0]
    for cam in CAMERAS:
        key = f"videos/observation.images.{cam}"
        np.testing.assert_allclose(eps[f"{key}/from_timestamp"], [0.0, LENGTHS[0] / FPS])
        np.testing.assert_allclose(eps[f"{key}/to_timestamp"], [LENGTHS[0] / FPS, sum(LENGTHS) / FPS])
        assert eps[f"{key}/chunk_index"] == eps[f"{key}/file_index"] == [0, 0]
    np.testing.assert_allclose(eps["stats/action/max"][1], episodes[1].action.max(0), rtol=1e-6)
    tasks = pq.read_table(root / "meta" / "tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0, 1], "task": [ep.instruction for ep in episodes]}


def test_stats_match_numpy(exported) -> None:
    root, episodes = exported
    stats = load_json(root / "meta" / "stats.json")
    for key, field in (("observation.state", "qpos"), ("action", "action")):
        source = np.concatenate([getattr(ep, field) for ep in episodes])
        for stat, fn in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)):
            np.testing.assert_allclose(stats[key][stat], fn(source, axis=0), rtol=1e-5, atol=1e-6, err_msg=stat)
        assert stats[key]["count"] == [sum(LENGTHS)]
    assert stats["frame_index"]["max"] == [max(LENGTHS) - 1]
    for cam in CAMERAS:
        pixels = np.concatenate([ep.images[cam] for ep in episodes]).reshape(-1, 3) / 255.0
        image = stats[f"observation.images.{cam}"]
        assert np.array(image["mean"]).shape == (3, 1, 1)
        for stat, fn in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)):
            np.testing.assert_allclose(np.array(image[stat]).ravel(), fn(pixels, axis=0), rtol=1e-9, err_msg=stat)
        assert image["count"] == [sum(LENGTHS)]


def test_videos_decode(exported) -> None:
    root, episodes = exported
    for cam in CAMERAS:
        source = np.concatenate([ep.images[cam] for ep in episodes])
        capture = cv2.VideoCapture(str(root / "videos" / f"observation.images.{cam}" / "chunk-000" / "file-000.mp4"))
        assert capture.isOpened()
        assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == W and int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == H
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(source)
        decoded = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).astype(np.float64))
        capture.release()
        assert len(decoded) == len(source)
        # mp4v is lossy; on smooth images it stays within a few grey levels. Check the first frame of each episode,
        # and that it matches its own source frame far better than the other episode's (order and RGB kept).
        for start, other in ((0, LENGTHS[0]), (LENGTHS[0], 0)):
            own = np.abs(decoded[start] - source[start]).mean()
            assert own < 8.0, (cam, start, own)
            assert own < np.abs(decoded[start] - source[other]).mean() / 2
        swapped = np.abs(decoded[0][..., ::-1] - source[0]).mean()
        assert swapped > 2 * np.abs(decoded[0] - source[0]).mean()


def test_refuses_existing_output_and_bad_repo_id(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_episode(tmp_path / "episode_0000.hdf5", make_episode(rng, 3, 0))
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken"):
        export_lerobot_v3([path], tmp_path / "taken", repo_id="eva/x", robot_type="cobot_magic")
    with pytest.raises(ValueError, match="repo_id"):
        export_lerobot_v3([path], tmp_path / "new", repo_id="no slash", robot_type="cobot_magic")
    with pytest.raises(ValueError, match="at least one"):
        export_lerobot_v3([], tmp_path / "new", repo_id="eva/x", robot_type="cobot_magic")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"joint_names": (*JOINTS[:13], "other")}, "joint_names"),
        ({"fps": 15.0}, "fps"),
        ({"images": {"cam_high": np.zeros((4, H, W, 3), dtype=np.uint8)}}, "/observations/images"),
        ({"images": {cam: np.zeros((4, H, 2 * W, 3), dtype=np.uint8) for cam in CAMERAS}}, "/observations/images"),
    ],
)
def test_inconsistent_episodes_name_the_file(tmp_path: Path, change: dict, key: str) -> None:
    rng = np.random.default_rng(1)
    good = write_episode(tmp_path / "episode_0000.hdf5", make_episode(rng, 3, 0))
    bad = write_episode(tmp_path / "episode_0001.hdf5", make_episode(rng, 4, 1, **change))
    with pytest.raises(EpisodeFileError) as info:
        export_lerobot_v3([good, bad], tmp_path / "out", repo_id="eva/x", robot_type="cobot_magic")
    assert str(bad) in str(info.value) and key in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_0000.hdf5", "episode_0001.hdf5"]
