"""LeRobotDataset v3.0 input: reads each episode of a dataset directory back as an `Episode`.

Detecting a dataset, checking its metadata and digesting it live in :mod:`.lerobot_meta`, listing its episodes in
:mod:`.lerobot_episodes`; this module reads one listed episode's rows, task and video frames. Together they cover
what :mod:`eva_runtime.records.lerobot_export` writes and the LeRobot v3 layouts that share its shape, with one or
more chunk/file parquet and video files:

- ``meta/info.json``: ``codebase_version`` "v3.*", ``fps``, ``robot_type``, ``data_path``, ``video_path`` and the
  ``features`` (``observation.state`` and ``action`` as float vectors sharing their joint ``names``; cameras as
  ``dtype: video`` features). Frames stored inside the parquet (``dtype: image``) are refused, not skipped.
- ``meta/episodes/chunk-*/file-*.parquet``: one row per episode with its length, global frame range, data file
  and, per camera, the video file and the episode's ``from_timestamp``/``to_timestamp`` inside it.
- ``meta/tasks.parquet``: task text per ``task_index``; an episode's task and instruction are both the text of its
  first frame's task (an `Episode` holds one instruction, LeRobot allows several tasks per episode).

Limits: videos are decoded with OpenCV (``cv2.VideoCapture``, seeking with ``CAP_PROP_POS_FRAMES`` to
``round(from_timestamp * fps)``), so only codecs the installed OpenCV/FFmpeg decodes are read (AV1 often is not);
``qvel`` is not in LeRobot datasets and reads as None, seed and success as None; joint values come back as the
float32 stored, widened to float64. Every inconsistency raises :class:`LeRobotDatasetError` (a ValueError) naming
the file and the key.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eva_runtime.records.hdf5_episodes import Episode, EpisodeError
from eva_runtime.records.lerobot_episodes import LeRobotEpisodeRef, LeRobotVideoRef
from eva_runtime.records.lerobot_meta import (
    ACTION,
    EPISODES_DIR,
    STATE,
    TASKS,
    LeRobotDatasetError,
    info_features,
    info_fps,
    info_joint_names,
    int_column,
    parquet_columns,
    read_info,
)

__all__ = ["read_lerobot_episode"]

_DATA_COLUMNS = ("index", "episode_index", "frame_index", "task_index", STATE, ACTION)


@functools.lru_cache(maxsize=4)
def _data_table(path: str, mtime_ns: int, size: int) -> pa.Table:
    # Keyed on mtime and size so a rewritten file is read again. Cached because every episode of a file reads the
    # same file: without it, listing N episodes of one parquet would decode it N times.
    del mtime_ns, size
    return parquet_columns(Path(path), list(_DATA_COLUMNS))


def _vectors(table: pa.Table, path: Path, name: str, width: int) -> np.ndarray:
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise LeRobotDatasetError(path, f"column {name!r}", "contains nulls")
    kind = column.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise LeRobotDatasetError(path, f"column {name!r}", f"expected a list column, got {kind}")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(column) and not np.all(lengths == width):
        raise LeRobotDatasetError(
            path, f"column {name!r}", f"rows of {sorted(set(lengths.tolist()))} values, not {width}"
        )
    values = column.flatten()
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)) or values.null_count:
        raise LeRobotDatasetError(path, f"column {name!r}", f"expected numbers without nulls, got {values.type}")
    return values.to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(column), width)


def _task_texts(root: Path) -> dict[int, str]:
    path = root / TASKS
    if not path.is_file():
        raise LeRobotDatasetError(path, "/", "file missing")
    schema = pq.read_schema(path)
    # LeRobot writes the task text as the pandas index: a "task" column, or "__index_level_0__" when unnamed.
    text = "task" if "task" in schema.names else "__index_level_0__"
    table = parquet_columns(path, ["task_index", text])
    indices = int_column(table, path, "task_index")
    texts = table.column(text).to_pylist()
    if not all(isinstance(t, str) for t in texts):
        raise LeRobotDatasetError(path, f"column {text!r}", "expected task text in every row")
    return dict(zip(indices.tolist(), texts, strict=True))


def _read_video(root: Path, video: LeRobotVideoRef, fps: float, length: int, shape: object) -> np.ndarray:
    """The episode's ``length`` frames of one camera, RGB uint8, seeking straight to its first frame."""
    path = root / video.path
    key = f"{video.key} from {video.from_timestamp} s"
    if not path.is_file():
        raise LeRobotDatasetError(path, key, "file missing")
    first = round(video.from_timestamp * fps)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise LeRobotDatasetError(path, key, "OpenCV cannot open this video (codec not supported?)")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if total > 0 and first + length > total:
            raise LeRobotDatasetError(
                path, key, f"has {total} frames; the episode needs frames {first}..{first + length - 1}"
            )
        if first and not capture.set(cv2.CAP_PROP_POS_FRAMES, first):
            raise LeRobotDatasetError(path, key, f"OpenCV cannot seek to frame {first}")
        frames = []
        for _ in range(length):
            ok, frame = capture.read()
            if not ok:
                raise LeRobotDatasetError(
                    path, key, f"decoded {len(frames)} frames from frame {first}; the episode has {length}"
                )
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))  # OpenCV decodes to BGR
    finally:
        capture.release()
    images = np.stack(frames)
    if isinstance(shape, list) and list(images.shape[1:]) != shape:
        raise LeRobotDatasetError(path, key, f"frames of shape {list(images.shape[1:])}, info.json says {shape}")
    return images


def read_lerobot_episode(root: Path | str, ref: LeRobotEpisodeRef, load_images: bool = True) -> Episode:
    """Read and check one episode; ``load_images=False`` leaves ``images`` empty (metadata and joints only)."""
    root = Path(root)
    info = read_info(root)
    fps = info_fps(info, root)
    features = info_features(info, root)
    joint_names = info_joint_names(features, root)
    data = root / ref.data_path
    if not data.is_file():
        raise LeRobotDatasetError(data, f"episode {ref.index} data", "file missing")
    stat = data.stat()
    table = _data_table(str(data), stat.st_mtime_ns, stat.st_size)
    global_index = int_column(table, data, "index")
    # Rows are selected by the global frame index, not by position: a later file does not start at row 0 of the set.
    rows = np.flatnonzero((global_index >= ref.dataset_from_index) & (global_index < ref.dataset_to_index))
    key = f"episode {ref.index} rows index {ref.dataset_from_index}..{ref.dataset_to_index - 1}"
    if len(rows) != ref.length:
        raise LeRobotDatasetError(data, key, f"{len(rows)} frames, {EPISODES_DIR} says {ref.length}")
    episode_rows = table.take(pa.array(rows[np.argsort(global_index[rows], kind="stable")]))
    if not np.all(int_column(episode_rows, data, "episode_index") == ref.index):
        raise LeRobotDatasetError(data, f"{key} column 'episode_index'", f"not all {ref.index}")
    if not np.array_equal(int_column(episode_rows, data, "frame_index"), np.arange(ref.length)):
        raise LeRobotDatasetError(data, f"{key} column 'frame_index'", f"not 0..{ref.length - 1}")
    qpos = _vectors(episode_rows, data, STATE, len(joint_names))
    action = _vectors(episode_rows, data, ACTION, len(joint_names))
    task_index = int(int_column(episode_rows, data, "task_index")[0])
    tasks = _task_texts(root)
    if task_index not in tasks:
        raise LeRobotDatasetError(root / TASKS, "task_index", f"no task {task_index} (episode {ref.index})")
    images = {}
    if load_images:
        for video in ref.videos:
            shape = features.get(video.key, {}).get("shape")
            images[video.camera] = _read_video(root, video, fps, ref.length, shape)
    robot_type = info.get("robot_type")
    try:
        return Episode(
            images=images,
            qpos=qpos,
            action=action,
            qvel=None,
            fps=fps,
            embodiment=robot_type if isinstance(robot_type, str) else "",
            task=tasks[task_index],
            instruction=tasks[task_index],
            joint_names=joint_names,
        )
    except EpisodeError as exc:
        raise LeRobotDatasetError(data, f"episode {ref.index} {exc.field}", str(exc)) from exc
