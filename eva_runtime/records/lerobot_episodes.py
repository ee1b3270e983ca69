"""The episode listing of a LeRobotDataset v3.0 directory: where each episode's rows and videos lie.

Reads the ``meta/episodes/chunk-*/file-*.parquet`` rows into :class:`LeRobotEpisodeRef` values and checks them
against ``meta/info.json`` and the files on disk before any episode is read (see :mod:`.lerobot_reader`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.records.lerobot_meta import (
    EPISODES_DIR,
    INFO,
    LeRobotDatasetError,
    float_column,
    format_path,
    info_features,
    info_fps,
    info_joint_names,
    info_video_keys,
    int_column,
    parquet_columns,
    read_info,
)

__all__ = ["LeRobotEpisodeRef", "LeRobotVideoRef", "lerobot_episode_refs"]

_EPISODE_COLUMNS = (
    "episode_index",
    "length",
    "dataset_from_index",
    "dataset_to_index",
    "data/chunk_index",
    "data/file_index",
)
_VIDEO_FIELDS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")


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


def lerobot_episode_refs(root: Path | str) -> list[LeRobotEpisodeRef]:
    """Every episode of the dataset at ``root``, ordered by episode index; checks the files they point at exist."""
    root = Path(root)
    info = read_info(root)
    fps = info_fps(info, root)
    features = info_features(info, root)
    info_joint_names(features, root)
    listing = _Listing(root, info, fps, info_video_keys(features, root))
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotDatasetError(root / EPISODES_DIR, "chunk-*/file-*.parquet", "no episode metadata files")
    refs = [ref for file in files for ref in listing.file_refs(file)]
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


@dataclass(frozen=True)
class _Listing:
    """What turning ``meta/episodes`` rows into refs needs from ``info.json``."""

    root: Path
    info: dict
    fps: float
    video_keys: dict[str, str]  # video feature -> camera name

    def file_refs(self, file: Path) -> list[LeRobotEpisodeRef]:
        """The episodes one ``meta/episodes`` parquet file lists, in its row order."""
        video_columns = [f"videos/{key}/{field}" for key in self.video_keys for field in _VIDEO_FIELDS]
        table = parquet_columns(file, [*_EPISODE_COLUMNS, *video_columns])
        columns = {name: int_column(table, file, name) for name in _EPISODE_COLUMNS}
        for name in video_columns:
            columns[name] = (float_column if name.endswith("timestamp") else int_column)(table, file, name)
        return [self._episode_ref(file, columns, row) for row in range(table.num_rows)]

    def _episode_ref(self, file: Path, columns: dict[str, np.ndarray], row: int) -> LeRobotEpisodeRef:
        index, length = int(columns["episode_index"][row]), int(columns["length"][row])
        start, stop = int(columns["dataset_from_index"][row]), int(columns["dataset_to_index"][row])
        if length < 1 or stop - start != length:
            raise LeRobotDatasetError(
                file, f"episode {index}", f"length {length} disagrees with dataset index range [{start}, {stop})"
            )
        data_path = format_path(
            self.info.get("data_path"),
            self.root,
            "data_path",
            chunk_index=int(columns["data/chunk_index"][row]),
            file_index=int(columns["data/file_index"][row]),
        )
        videos = tuple(
            self._video_ref(file, columns, row, index, length, key, camera) for key, camera in self.video_keys.items()
        )
        return LeRobotEpisodeRef(index, length, start, stop, data_path, videos)

    def _video_ref(
        self, file: Path, columns: dict[str, np.ndarray], row: int, index: int, length: int, key: str, camera: str
    ) -> LeRobotVideoRef:
        prefix = f"videos/{key}"
        begin, end = float(columns[f"{prefix}/from_timestamp"][row]), float(columns[f"{prefix}/to_timestamp"][row])
        # Half a frame of slack: LeRobot stores container durations, which may be rounded.
        if abs((end - begin) * self.fps - length) >= 0.5:
            raise LeRobotDatasetError(
                file, f"episode {index} {prefix}", f"[{begin}, {end}) s is not {length} frames at {self.fps} fps"
            )
        video_path = format_path(
            self.info.get("video_path"),
            self.root,
            "video_path",
            video_key=key,
            chunk_index=int(columns[f"{prefix}/chunk_index"][row]),
            file_index=int(columns[f"{prefix}/file_index"][row]),
        )
        return LeRobotVideoRef(key, camera, video_path, begin, end)
