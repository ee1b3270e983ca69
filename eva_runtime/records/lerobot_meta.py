"""Checked access to a LeRobotDataset v3.0 directory's metadata and files (see :mod:`.lerobot_reader`).

Owns the dataset's fixed paths and feature names, :class:`LeRobotDatasetError`, the checks on ``meta/info.json``
(version, fps, features, joint names, video features, path templates), parquet column reading with errors that
name the file and the column, and the dataset's content digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "ACTION",
    "CAMERA_PREFIX",
    "DATA_DIRS",
    "EPISODES_DIR",
    "INFO",
    "STATE",
    "TASKS",
    "LeRobotDatasetError",
    "float_column",
    "format_path",
    "info_features",
    "info_fps",
    "info_joint_names",
    "info_video_keys",
    "int_column",
    "is_lerobot_v3",
    "lerobot_codebase_version",
    "lerobot_digest",
    "parquet_columns",
    "read_info",
]

INFO = "meta/info.json"
TASKS = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
STATE, ACTION = "observation.state", "action"
CAMERA_PREFIX = "observation.images."
# Directories holding the data the reader reads; the digest covers exactly these (see lerobot_digest).
DATA_DIRS = ("meta", "data", "videos")


class LeRobotDatasetError(ValueError):
    """A LeRobot dataset file is missing, lacks a key or column, or disagrees with the rest of the dataset."""

    def __init__(self, path: Path | str, key: str, message: str) -> None:
        self.path = Path(path)
        self.key = key
        super().__init__(f"{path}: {key}: {message}")


def read_info(root: Path) -> dict:
    """The parsed ``meta/info.json`` of the dataset at ``root``."""
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
    version = read_info(root).get("codebase_version")
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


def info_fps(info: dict, root: Path) -> float:
    """The dataset's frame rate, checked finite and positive."""
    rate = float(_info_key(info, root, "fps", (int, float)))  # type: ignore[arg-type]
    if not (np.isfinite(rate) and rate > 0):
        raise LeRobotDatasetError(root / INFO, "fps", f"must be a finite number > 0, got {rate}")
    return rate


def info_features(info: dict, root: Path) -> dict[str, dict]:
    """The ``features`` table, checked to hold the state and action features."""
    found = _info_key(info, root, "features", dict)
    for name in (STATE, ACTION):
        if not isinstance(found.get(name), dict):  # type: ignore[union-attr]
            raise LeRobotDatasetError(root / INFO, f"features.{name}", "missing feature")
    return found  # type: ignore[return-value]


def info_joint_names(features: dict[str, dict], root: Path) -> tuple[str, ...]:
    """The joint names the state and action features share (they must agree, names and shape)."""
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


def info_video_keys(features: dict[str, dict], root: Path) -> dict[str, str]:
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


def format_path(template: object, root: Path, key: str, **fields: object) -> Path:
    """``info.json``'s path template ``key`` filled with ``fields`` (a path relative to the dataset root)."""
    if not isinstance(template, str):
        raise LeRobotDatasetError(root / INFO, key, f"expected a path template, got {template!r}")
    try:
        return Path(template.format(**fields))
    except (KeyError, IndexError, ValueError) as exc:
        raise LeRobotDatasetError(root / INFO, key, f"template {template!r} does not format ({exc})") from exc


def parquet_columns(path: Path, names: list[str]) -> pa.Table:
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


def int_column(table: pa.Table, path: Path, name: str) -> np.ndarray:
    """An integer column without nulls, as int64."""
    column = table.column(name)
    if column.null_count or not pa.types.is_integer(column.type):
        raise LeRobotDatasetError(path, f"column {name!r}", f"expected integers without nulls, got {column.type}")
    return column.to_numpy().astype(np.int64)


def float_column(table: pa.Table, path: Path, name: str) -> np.ndarray:
    """A numeric column without nulls, as float64."""
    column = table.column(name)
    if column.null_count or not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise LeRobotDatasetError(path, f"column {name!r}", f"expected numbers without nulls, got {column.type}")
    return column.to_numpy().astype(np.float64)


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
