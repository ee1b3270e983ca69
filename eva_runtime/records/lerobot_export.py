"""LeRobotDataset v3.0 export: turns HDF5 episode files into the community dataset layout for training tools.

Writes ``meta/info.json``, ``meta/stats.json``, ``meta/tasks.parquet``, ``meta/episodes/chunk-000/file-000.parquet``,
``data/chunk-000/file-000.parquet`` (one row per frame) and ``videos/observation.images.<cam>/chunk-000/file-000.mp4``
(all episodes of a camera back to back), plus a ``README.md`` dataset card recording the source files' digest.

Limits, by design:
- Everything goes into chunk 000 / file 000, whatever the size (LeRobot itself starts new files at 100 MB of data
  and 500 MB of video). Fine for the few-GB datasets this project collects; bigger sets need real chunking.
- Videos are MPEG-4 Part 2 (OpenCV ``mp4v``): lossy, decodable by LeRobot's pyav/torchcodec backends, but not
  one of the codecs LeRobot encodes with (h264/hevc/AV1); re-encode before publishing if that matters.
- Joint values are stored as float32, as LeRobot does. ``qvel`` is not exported.
- An episode's task text is its instruction (its task name when the instruction is empty).
- Stats carry min/max/mean/std/count plus the q01..q99 quantiles newer LeRobot versions add; image stats are exact
  (every pixel, 0-1, shape (3, 1, 1)) where LeRobot samples frames.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eva_runtime.records.hdf5_episodes import (
    IMAGES,
    Episode,
    EpisodeFileError,
    camera_shapes,
    dataset_digest,
    read_episode,
    read_frames,
)

__all__ = ["CODEBASE_VERSION", "DATA_PATH", "EPISODES_PATH", "VIDEO_PATH", "export_lerobot_v3"]

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# Frames read per HDF5 slice: bounds memory to ~30 MB per block at 640x480 however long the episode.
_FRAME_BLOCK = 32

Stats = dict[str, np.ndarray]


def _vector_stats(x: np.ndarray) -> Stats:
    """Stats over frames of an (N, D) array: each value (D,), count (1,), as LeRobot's compute_stats."""
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    out.update({name: np.quantile(x, q, axis=0) for name, q in QUANTILES.items()})
    return out


class _PixelHistogram:
    """Exact per-channel pixel statistics from 256-bin histograms, so no video is ever held in memory."""

    def __init__(self) -> None:
        self.hist = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        for c in range(3):
            self.hist[c] += np.bincount(frames[..., c].ravel(), minlength=256)
        self.frames += len(frames)

    def stats(self) -> Stats:
        values = np.arange(256, dtype=np.float64)
        n = self.hist.sum(1)
        mean = self.hist @ values / n
        std = np.sqrt((self.hist * (values - mean[:, None]) ** 2).sum(1) / n)
        cdf = np.cumsum(self.hist, 1) / n[:, None]
        raw = {"min": (self.hist > 0).argmax(1), "max": 255 - (self.hist[:, ::-1] > 0).argmax(1), "mean": mean}
        raw["std"] = std
        raw.update({name: (cdf >= q).argmax(1) for name, q in QUANTILES.items()})
        # LeRobot keeps image stats in 0-1 with shape (3, 1, 1) so they broadcast over (C, H, W) tensors.
        out = {name: (np.asarray(v, dtype=np.float64) / 255.0).reshape(3, 1, 1) for name, v in raw.items()}
        out["count"] = np.array([self.frames])
        return out


def _merged(hists: list[_PixelHistogram]) -> _PixelHistogram:
    total = _PixelHistogram()
    for h in hists:
        total.hist += h.hist
        total.frames += h.frames
    return total


def _check_episodes(paths: list[Path]) -> tuple[list[Episode], dict[str, tuple[int, ...]]]:
    """Joints and metadata of every episode (no pixels), checked to share joints, fps and camera geometry."""
    episodes: list[Episode] = []
    cameras: dict[str, tuple[int, ...]] = {}
    for path in paths:
        ep = read_episode(path, load_images=False)
        frame_shapes = {}
        for cam, shape in camera_shapes(path).items():
            if len(shape) != 4 or shape[0] != ep.length or shape[3] != 3:
                raise EpisodeFileError(path, f"{IMAGES}/{cam}", f"shape {shape} is not ({ep.length}, H, W, 3)")
            frame_shapes[cam] = shape[1:]
        if not episodes:
            cameras = frame_shapes
        elif ep.joint_names != episodes[0].joint_names:
            raise EpisodeFileError(path, "attribute 'joint_names'", f"differs from {paths[0]}")
        elif ep.fps != episodes[0].fps:
            raise EpisodeFileError(path, "attribute 'fps'", f"{ep.fps} differs from {episodes[0].fps} in {paths[0]}")
        elif frame_shapes != cameras:
            raise EpisodeFileError(path, IMAGES, f"cameras {frame_shapes} differ from {cameras} in {paths[0]}")
        episodes.append(ep)
    return episodes, cameras


def _write_video(
    out: Path, cam: str, shape: tuple[int, ...], fps: float, paths: list[Path], lengths: list[int]
) -> list[_PixelHistogram]:
    """Encode one camera of all episodes into one mp4; returns each episode's pixel histogram."""
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (shape[1], shape[0]))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open an mp4v writer for {out}")
    hists = []
    try:
        for path, length in zip(paths, lengths, strict=True):
            hist = _PixelHistogram()
            for start in range(0, length, _FRAME_BLOCK):
                frames = read_frames(path, cam, start, min(start + _FRAME_BLOCK, length))
                if frames.dtype != np.uint8:
                    raise EpisodeFileError(path, f"{IMAGES}/{cam}", f"expected uint8 frames, got {frames.dtype}")
                hist.add(frames)
                for frame in frames:
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))  # OpenCV encodes BGR
            hists.append(hist)
    finally:
        writer.release()
    return hists


def _column(values: np.ndarray) -> pa.Array:
    # Vectors as fixed-size lists: what datasets.Sequence(length=D) reads back as.
    if values.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
    return pa.array(values)


def _write_tasks(path: Path, tasks: list[str]) -> None:
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    # LeRobot reads this file with pandas and looks tasks up in the index: declare "task" as the pandas index.
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64"},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object"},
        ],
    }
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=4) + "\n")


def export_lerobot_v3(episode_paths: Iterable[Path | str], out_dir: Path | str, repo_id: str, robot_type: str) -> Path:
    """Export HDF5 episodes (in the given order) as a LeRobotDataset v3.0 at ``out_dir``, which must not exist."""
    paths = [Path(p) for p in episode_paths]
    if not paths:
        raise ValueError("export_lerobot_v3 needs at least one episode file")
    if not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; refusing to overwrite a dataset")
    episodes, cameras = _check_episodes(paths)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename at the end, so an interrupted export never looks like a dataset.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _export(tmp, paths, episodes, cameras, repo_id, robot_type)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _export(
    root: Path,
    paths: list[Path],
    episodes: list[Episode],
    cameras: dict[str, tuple[int, ...]],
    repo_id: str,
    robot_type: str,
) -> None:
    fps, n_eps = episodes[0].fps, len(episodes)
    task_of = [ep.instruction or ep.task for ep in episodes]
    tasks = list(dict.fromkeys(task_of))
    lengths = np.array([ep.length for ep in episodes], dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    columns = _frame_columns(episodes, lengths, [tasks.index(t) for t in task_of])
    data_path = root / DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True)
    pq.write_table(pa.table({key: _column(v) for key, v in columns.items()}), data_path)

    video_keys = {cam: f"observation.images.{cam}" for cam in cameras}
    hists: dict[str, list[_PixelHistogram]] = {}
    for cam, key in video_keys.items():
        video = root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
        hists[cam] = _write_video(video, cam, cameras[cam], fps, paths, lengths.tolist())

    ep_stats = [
        _stats_of(columns, video_keys, slice(s, e), {c: hists[c][i] for c in cameras})
        for i, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]
    total_stats = _stats_of(columns, video_keys, slice(None), {c: _merged(hists[c]) for c in cameras})

    meta = root / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True)
    episode_rows = _episode_rows(task_of, lengths, starts, ends, fps, video_keys, ep_stats, total_stats)
    pq.write_table(pa.table({k: pa.array(v) for k, v in episode_rows.items()}), root / EPISODES_PATH)
    _write_tasks(meta / "tasks.parquet", tasks)
    _write_json(meta / "stats.json", {f: {k: v.tolist() for k, v in s.items()} for f, s in total_stats.items()})
    fps_json = int(fps) if float(fps).is_integer() else fps  # LeRobot writes integer fps
    features = _features(list(episodes[0].joint_names), cameras, video_keys, fps_json)
    _write_json(
        meta / "info.json",
        {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": robot_type,
            "total_episodes": n_eps,
            "total_frames": int(ends[-1]),
            "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": fps_json,
            "splits": {"train": f"0:{n_eps}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if cameras else None,
            "features": features,
        },
    )
    (root / "README.md").write_text(_dataset_card(repo_id, n_eps, paths))


def _frame_columns(episodes: list[Episode], lengths: np.ndarray, task_indices: list[int]) -> dict[str, np.ndarray]:
    """The frame table's columns, one row per frame of every episode back to back."""
    fps = episodes[0].fps
    return {
        "observation.state": np.concatenate([ep.qpos for ep in episodes]).astype(np.float32),
        "action": np.concatenate([ep.action for ep in episodes]).astype(np.float32),
        "timestamp": np.concatenate([np.arange(n) / fps for n in lengths]).astype(np.float32),
        "frame_index": np.concatenate([np.arange(n, dtype=np.int64) for n in lengths]),
        "episode_index": np.repeat(np.arange(len(episodes), dtype=np.int64), lengths),
        "index": np.arange(int(lengths.sum()), dtype=np.int64),
        "task_index": np.repeat(np.array(task_indices, dtype=np.int64), lengths),
    }


def _stats_of(
    columns: dict[str, np.ndarray],
    video_keys: dict[str, str],
    rows: slice,
    image_hists: dict[str, _PixelHistogram],
) -> dict[str, Stats]:
    """Stats of every feature over the given rows of the frame table and the matching pixel histograms."""
    out = {key: _vector_stats(v[rows].reshape(len(v[rows]), -1).astype(np.float64)) for key, v in columns.items()}
    out.update({video_keys[cam]: h.stats() for cam, h in image_hists.items()})
    return out


def _episode_rows(
    task_of: list[str],
    lengths: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    fps: float,
    video_keys: dict[str, str],
    ep_stats: list[dict[str, Stats]],
    total_stats: dict[str, Stats],
) -> dict[str, list]:
    """The episodes table: boundaries in the frame table and the videos, file locations and per-episode stats."""
    zeros = [0] * len(task_of)
    episode_rows: dict[str, list] = {
        "episode_index": list(range(len(task_of))),
        "tasks": [[t] for t in task_of],
        "length": lengths.tolist(),
        "data/chunk_index": zeros,
        "data/file_index": zeros,
        "dataset_from_index": starts.tolist(),
        "dataset_to_index": ends.tolist(),
    }
    for key in video_keys.values():
        episode_rows[f"videos/{key}/chunk_index"] = zeros
        episode_rows[f"videos/{key}/file_index"] = zeros
        episode_rows[f"videos/{key}/from_timestamp"] = (starts / fps).tolist()
        episode_rows[f"videos/{key}/to_timestamp"] = (ends / fps).tolist()
    episode_rows["meta/episodes/chunk_index"] = zeros
    episode_rows["meta/episodes/file_index"] = zeros
    # Column names follow the total stats so every episode row has the same features and statistics.
    for feature, stats in total_stats.items():
        for stat in stats:
            episode_rows[f"stats/{feature}/{stat}"] = [s[feature][stat].tolist() for s in ep_stats]
    return episode_rows


def _features(
    names: list[str], cameras: dict[str, tuple[int, ...]], video_keys: dict[str, str], fps_json: float
) -> dict[str, dict]:
    """info.json's feature descriptions: joint vectors, one video per camera, then the index columns."""
    vector = {"dtype": "float32", "shape": [len(names)], "names": names}
    features: dict[str, dict] = {"observation.state": vector, "action": dict(vector)}
    for cam, key in video_keys.items():
        h, w, c = cameras[cam]
        features[key] = {
            "dtype": "video",
            "shape": [h, w, c],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": "mpeg4",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps_json,
                "video.channels": c,
                "has_audio": False,
            },
        }
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in ("frame_index", "episode_index", "index", "task_index"):
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    return features


def _dataset_card(repo_id: str, n_eps: int, paths: list[Path]) -> str:
    """README.md: the hub's dataset-card header and the source files' digest."""
    card = "---\ntags: [LeRobot]\ntask_categories: [robotics]\nconfigs:\n- config_name: default\n"
    card += f"  data_files: data/*/*.parquet\n---\n\n# {repo_id}\n\nExported by eva-runtime from {n_eps} HDF5 "
    card += f"episodes; source SHA-256 (eva_runtime.records.hdf5_episodes.dataset_digest): {dataset_digest(paths)}\n"
    return card
