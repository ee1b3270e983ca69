"""LeRobotDataset v3.0 input: detects a dataset directory, lists its episodes and reads each back as an `Episode`.

The reader covers what :mod:`eva_runtime.records.lerobot_export` writes and the LeRobot v3 layouts that share its
shape, with one or more chunk/file parquet and video files:

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
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eva_runtime.records.hdf5_episodes import Episode, EpisodeError

__all__ = [
    "LeRobotDatasetError",
    "LeRobotEpisodeRef",
    "LeRobotVideoRef",
    "is_lerobot_v3",
    "lerobot_codebase_version",
    "lerobot_digest",
    "lerobot_episode_refs",
    "read_lerobot_episode",
]

INFO = "meta/info.json"
TASKS = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
STATE, ACTION = "observation.state", "action"
CAMERA_PREFIX = "observation.images."
# Directories holding the data the reader reads; the digest covers exactly these (see lerobot_digest).
DATA_DIRS = ("meta", "data", "videos")
_DATA_COLUMNS = ("index", "episode_index", "frame_index", "task_index", STATE, ACTION)


class LeRobotDatasetError(ValueError):
    """A LeRobot dataset file is missing, lacks a key or column, or disagrees with the rest of the dataset."""

    def __init__(self, path: Path | str, key: str, message: str) -> None:
        self.path = Path(path)
        self.key = key
        super().__init__(f"{path}: {key}: {message}")


@dataclass(frozen=True)
class LeRobotVideoRef:
    """Where one camera of one episode lies: a video file (relative to the dataset root) and a time range in it."""

    key: str  # the feature, e.g. "observation.images.cam_high"
    camera: str  # the Episode's camera name, e.g. "cam_high"
    path: Path
    from_timestamp: float
    to_timestamp: float


@dataclass(frozen=True)
class LeRobotEpisodeRef:
    """One episode of a LeRobot v3 dataset, as its ``meta/episodes`` row describes it (paths relative to the root)."""

    index: int
    length: int
    dataset_from_index: int
    dataset_to_index: int
    data_path: Path
    videos: tuple[LeRobotVideoRef, ...]

    @property
    def name(self) -> str:
        """A stable, human-readable episode name (split files, error messages)."""
        return f"episode_{self.index}"


def _read_info(root: Path) -> dict:
    path = root / INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeRobotDatasetError(path, "/", f"not a readable JSON file ({exc})") from exc
    if not isinstance(info, dict):
        raise LeRobotDatasetError(path, "/", f"expected a JSON object, got {type(info).__name__}")
    return info


def lerobot_codebase_version(path: Path | str) -> str | None:
    """The ``codebase_version`` of the LeRobot dataset at ``path``, or None when ``path`` has no ``meta/info.json``."""
    root = Path(path)
    if not (root / INFO).is_file():
        return None
    version = _read_info(root).get("codebase_version")
    if not isinstance(version, str):
        raise LeRobotDatasetError(root / INFO, "codebase_version", f"expected a string, got {version!r}")
    return version


def is_lerobot_v3(path: Path | str) -> bool:
    """True when ``path`` is a LeRobotDataset v3.x directory (``meta/info.json`` with ``codebase_version`` v3*)."""
    version = lerobot_codebase_version(path)
    return version is not None and version.startswith("v3")


def _info_key(info: dict, root: Path, key: str, kind: type | tuple[type, ...]) -> object:
    if key not in info:
        raise LeRobotDatasetError(root / INFO, key, "missing")
    value = info[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise LeRobotDatasetError(root / INFO, key, f"unexpected value {value!r}")
    return value


def _fps(info: dict, root: Path) -> float:
    fps = float(_info_key(info, root, "fps", (int, float)))  # type: ignore[arg-type]
    if not (np.isfinite(fps) and fps > 0):
        raise LeRobotDatasetError(root / INFO, "fps", f"must be a finite number > 0, got {fps}")
    return fps


def _features(info: dict, root: Path) -> dict[str, dict]:
    features = _info_key(info, root, "features", dict)
    for name in (STATE, ACTION):
        if not isinstance(features.get(name), dict):  # type: ignore[union-attr]
            raise LeRobotDatasetError(root / INFO, f"features.{name}", "missing feature")
    return features  # type: ignore[return-value]


def _joint_names(features: dict[str, dict], root: Path) -> tuple[str, ...]:
    found = {}
    for name in (STATE, ACTION):
        names = features[name].get("names")
        # LeRobot writes a plain list; some converted datasets nest it once, e.g. {"motors": [...]}.
        if isinstance(names, dict) and len(names) == 1:
            names = next(iter(names.values()))
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise LeRobotDatasetError(root / INFO, f"features.{name}.names", f"expected a list of names, got {names!r}")
        if features[name].get("shape") != [len(names)]:
            shape = features[name].get("shape")
            raise LeRobotDatasetError(root / INFO, f"features.{name}.shape", f"{shape} != [{len(names)}] (names)")
        found[name] = tuple(names)
    if found[STATE] != found[ACTION]:
        raise LeRobotDatasetError(root / INFO, f"features.{ACTION}.names", f"differ from {STATE}'s {found[STATE]}")
    return found[STATE]


def _video_keys(features: dict[str, dict], root: Path) -> dict[str, str]:
    """Video feature -> camera name; refuses image features, whose frames live in the parquet and are not read."""
    keys = {}
    for key, feature in features.items():
        dtype = feature.get("dtype") if isinstance(feature, dict) else None
        if dtype == "image":
            raise LeRobotDatasetError(
                root / INFO,
                f"features.{key}",
                "image features (frames inside the parquet) are not supported; only video features are read",
            )
        if dtype == "video":
            camera = key.removeprefix(CAMERA_PREFIX)
            if not camera or "/" in camera:
                raise LeRobotDatasetError(root / INFO, f"features.{key}", "cannot name a camera after this key")
            keys[key] = camera
    return keys


def _columns(path: Path, names: list[str]) -> pa.Table:
    """The named columns of a parquet file, with a clear error for a missing file or column."""
    if not path.is_file():
        raise LeRobotDatasetError(path, "/", "file missing")
    try:
        present = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise LeRobotDatasetError(path, "/", f"not a readable parquet file ({exc})") from exc
    missing = [name for name in names if name not in present]
    if missing:
        raise LeRobotDatasetError(path, f"column(s) {missing}", "missing")
    return pq.read_table(path, columns=names)


def _int_column(table: pa.Table, path: Path, name: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count or not pa.types.is_integer(column.type):
        raise LeRobotDatasetError(path, f"column {name!r}", f"expected integers without nulls, got {column.type}")
    return column.to_numpy().astype(np.int64)


def _float_column(table: pa.Table, path: Path, name: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count or not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise LeRobotDatasetError(path, f"column {name!r}", f"expected numbers without nulls, got {column.type}")
    return column.to_numpy().astype(np.float64)


def _format_path(template: object, root: Path, key: str, **fields: object) -> Path:
    if not isinstance(template, str):
        raise LeRobotDatasetError(root / INFO, key, f"expected a path template, got {template!r}")
    try:
        return Path(template.format(**fields))
    except (KeyError, IndexError, ValueError) as exc:
        raise LeRobotDatasetError(root / INFO, key, f"template {template!r} does not format ({exc})") from exc


def lerobot_episode_refs(root: Path | str) -> list[LeRobotEpisodeRef]:
    """Every episode of the dataset at ``root``, ordered by episode index; checks the files they point at exist."""
    root = Path(root)
    info = _read_info(root)
    fps = _fps(info, root)
    features = _features(info, root)
    _joint_names(features, root)
    video_keys = _video_keys(features, root)
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotDatasetError(root / EPISODES_DIR, "chunk-*/file-*.parquet", "no episode metadata files")
    base = ["episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index", "data/file_index"]
    per_video = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
    names = base + [f"videos/{key}/{field}" for key in video_keys for field in per_video]
    refs: list[LeRobotEpisodeRef] = []
    for file in files:
        table = _columns(file, names)
        cols = {name: _int_column(table, file, name) for name in base}
        for key in video_keys:
            for field in per_video:
                name = f"videos/{key}/{field}"
                cols[name] = (_float_column if field.endswith("timestamp") else _int_column)(table, file, name)
        for row in range(table.num_rows):
            index, length = int(cols["episode_index"][row]), int(cols["length"][row])
            start, stop = int(cols["dataset_from_index"][row]), int(cols["dataset_to_index"][row])
            if length < 1 or stop - start != length:
                raise LeRobotDatasetError(
                    file, f"episode {index}", f"length {length} disagrees with dataset index range [{start}, {stop})"
                )
            data_path = _format_path(
                info.get("data_path"),
                root,
                "data_path",
                chunk_index=int(cols["data/chunk_index"][row]),
                file_index=int(cols["data/file_index"][row]),
            )
            videos = []
            for key, camera in video_keys.items():
                prefix = f"videos/{key}"
                begin, end = float(cols[f"{prefix}/from_timestamp"][row]), float(cols[f"{prefix}/to_timestamp"][row])
                # Half a frame of slack: LeRobot stores container durations, which may be rounded.
                if abs((end - begin) * fps - length) >= 0.5:
                    raise LeRobotDatasetError(
                        file, f"episode {index} {prefix}", f"[{begin}, {end}) s is not {length} frames at {fps} fps"
                    )
                video_path = _format_path(
                    info.get("video_path"),
                    root,
                    "video_path",
                    video_key=key,
                    chunk_index=int(cols[f"{prefix}/chunk_index"][row]),
                    file_index=int(cols[f"{prefix}/file_index"][row]),
                )
                videos.append(LeRobotVideoRef(key, camera, video_path, begin, end))
            refs.append(LeRobotEpisodeRef(index, length, start, stop, data_path, tuple(videos)))
    refs.sort(key=lambda ref: ref.index)
    indices = [ref.index for ref in refs]
    if len(set(indices)) != len(indices):
        raise LeRobotDatasetError(root / EPISODES_DIR, "episode_index", "an episode index appears more than once")
    total = info.get("total_episodes")
    if total is not None and total != len(refs):
        raise LeRobotDatasetError(root / INFO, "total_episodes", f"{total}, but {EPISODES_DIR} lists {len(refs)}")
    # Fail at listing, before any training work, when a referenced file is gone.
    for ref in refs:
        for relative, what in ((ref.data_path, "data"), *((v.path, v.key) for v in ref.videos)):
            if not (root / relative).is_file():
                raise LeRobotDatasetError(root / relative, f"episode {ref.index} {what}", "file missing")
    return refs


@functools.lru_cache(maxsize=4)
def _data_table(path: str, mtime_ns: int, size: int) -> pa.Table:
    # Keyed on mtime and size so a rewritten file is read again. Cached because every episode of a file reads the
    # same file: without it, listing N episodes of one parquet would decode it N times.
    del mtime_ns, size
    return _columns(Path(path), list(_DATA_COLUMNS))


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
    table = _columns(path, ["task_index", text])
    indices = _int_column(table, path, "task_index")
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
    info = _read_info(root)
    fps = _fps(info, root)
    features = _features(info, root)
    joint_names = _joint_names(features, root)
    data = root / ref.data_path
    if not data.is_file():
        raise LeRobotDatasetError(data, f"episode {ref.index} data", "file missing")
    stat = data.stat()
    table = _data_table(str(data), stat.st_mtime_ns, stat.st_size)
    global_index = _int_column(table, data, "index")
    # Rows are selected by the global frame index, not by position: a later file does not start at row 0 of the set.
    rows = np.flatnonzero((global_index >= ref.dataset_from_index) & (global_index < ref.dataset_to_index))
    key = f"episode {ref.index} rows index {ref.dataset_from_index}..{ref.dataset_to_index - 1}"
    if len(rows) != ref.length:
        raise LeRobotDatasetError(data, key, f"{len(rows)} frames, {EPISODES_DIR} says {ref.length}")
    episode_rows = table.take(pa.array(rows[np.argsort(global_index[rows], kind="stable")]))
    if not np.all(_int_column(episode_rows, data, "episode_index") == ref.index):
        raise LeRobotDatasetError(data, f"{key} column 'episode_index'", f"not all {ref.index}")
    if not np.array_equal(_int_column(episode_rows, data, "frame_index"), np.arange(ref.length)):
        raise LeRobotDatasetError(data, f"{key} column 'frame_index'", f"not 0..{ref.length - 1}")
    qpos = _vectors(episode_rows, data, STATE, len(joint_names))
    action = _vectors(episode_rows, data, ACTION, len(joint_names))
    task_index = int(_int_column(episode_rows, data, "task_index")[0])
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


def lerobot_digest(root: Path | str) -> str:
    """SHA-256 over the dataset's ``meta/``, ``data/`` and ``videos/`` files in sorted relative-path order.

    Each file's relative path and size frame its bytes (as :func:`dataset_digest` does), so moving bytes between
    files changes the digest while a copied or moved dataset keeps it. The dataset card, ``.gitattributes`` and hidden
    directories (e.g. a Hugging Face download's ``.cache``) are left out: they do not change what training reads.
    """
    root = Path(root)
    files = []
    for top in DATA_DIRS:
        for directory, dirnames, filenames in os.walk(root / top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            files += [Path(directory, f) for f in filenames if not f.startswith(".")]
    if not files:
        raise LeRobotDatasetError(root, "meta, data, videos", "no dataset files to digest")
    digest = hashlib.sha256()
    for relative in sorted(p.relative_to(root).as_posix() for p in files):
        path = root / relative
        digest.update(f"{relative}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()
