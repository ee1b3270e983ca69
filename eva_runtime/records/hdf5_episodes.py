"""Demonstration episodes on disk: the vendor-style HDF5 layout, one file per episode, and its validation.

Layout written (``format`` attribute ``eva-runtime/hdf5-episode-v2``)::

    /observations/images/<camera>   (N, H, W, 3) uint8, raw RGB, one frame per chunk
    /observations/qpos              (N, J) float32, measured follower joints
    /observations/qvel              (N, J) float32, zeros when not measured (root attribute qvel_measured)
    /observations/effort            (N, J) float32, zeros when not measured (root attribute effort_measured)
    /action                         (N, J) float32, commanded (leader) joints
    root attributes: sim (bool), compress (always False), qvel_measured, effort_measured (bool), fps, embodiment,
                     task, instruction, joint_names (JSON), seed (-1 = none), success (-1 = unknown, 0, 1), format

Why this shape: the vendor loaders open the files directly with h5py.

- ACT, ``utils.py`` of tonyzhaozh/act: ``EpisodicDataset.__getitem__`` reads ``root.attrs['sim']`` first (it picks
  the action alignment: sim pairs action t with observation t, a real robot shifts actions back one step),
  ``root['/action'].shape``, ``/observations/qpos[t]``, ``/observations/qvel[t]`` and
  ``/observations/images/<cam>[t]`` as HWC uint8; ``get_norm_stats`` reads qpos, qvel and action whole and stacks
  them across episodes (so all episodes of a set must have the same N). Its ``record_sim_episodes.py`` writes
  these datasets with h5py's default dtype, float32, and ``sim = True``.
- AgileX, agilexrobotics/cobot_magic: ``aloha-devel/act/utils.py`` reads ``attrs['sim']`` and ``attrs['compress']``
  (True means each image row is an encoded JPEG for ``cv2.imdecode``; False means raw HWC uint8), qpos, qvel and
  action (its ``__getitem__`` trains on the next frame's qpos; ``/action`` feeds only the normalisation stats), and
  ``/base_action`` / ``/observations/images_depth/<cam>`` only when the mobile base or depth is enabled.
  ``collect_data/collect_data.py`` writes ``sim = False``, ``compress = False`` and qpos, qvel, effort and action
  as (N, 14) float32, images (N, 480, 640, 3) uint8 chunked one frame per chunk.

So qvel and effort are always present (the loaders index qvel unconditionally), and a ``*_measured`` attribute
says whether they hold data. HDF5 filter compression (gzip, lzf) is transparent to h5py readers and is not what
``compress`` means. :func:`episode_path` names files ``episode_{i}.hdf5``, unpadded, as both loaders open them and
AgileX's collect_data.py writes them, so a recorded directory feeds those loaders as it is.

Reading also accepts ``eva-runtime/hdf5-episode-v1`` files (float64 joints, optional qvel, no effort, no sim
attribute: only the simulator recorder wrote v1, so they read as ``sim=True``); joints come back as float64 either
way. Every problem found while reading raises :class:`EpisodeFileError` naming the file and dataset or attribute.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from eva_runtime.atomic_file import replaced_atomically

__all__ = [
    "FORMAT",
    "FORMAT_V1",
    "Episode",
    "EpisodeError",
    "EpisodeFileError",
    "camera_shapes",
    "dataset_digest",
    "episode_path",
    "list_episodes",
    "read_episode",
    "read_frames",
    "write_episode",
]

FORMAT = "eva-runtime/hdf5-episode-v2"
FORMAT_V1 = "eva-runtime/hdf5-episode-v1"
IMAGES = "/observations/images"
_FIELD_KEYS = {name: f"/observations/{name}" for name in ("qpos", "qvel", "effort")} | {"action": "/action"}
_OPTIONAL_FIELDS = ("qvel", "effort")  # always stored (zeros when absent), flagged by "<name>_measured"
_REQUIRED_ATTRS = ("format", "fps", "embodiment", "task", "instruction", "joint_names", "seed", "success")
_V2_ATTRS = ("sim", "compress", "qvel_measured", "effort_measured")
_STORED = np.float32  # what the vendor loaders write and read; callers still get float64
_EPISODE_NAME = re.compile(r"^episode_(\d+)\.hdf5$")
_COMPRESSIONS = (None, "gzip", "lzf")
_Joints = dict[str, np.ndarray | None]


class EpisodeError(ValueError):
    """An in-memory episode is inconsistent; ``field`` names the offending field (``images/<camera>`` for images)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"episode field {field!r}: {message}")


class EpisodeFileError(ValueError):
    """An episode file is missing a dataset or attribute, or holds invalid data."""

    def __init__(self, path: Path | str, key: str, message: str) -> None:
        self.path = Path(path)
        self.key = key
        super().__init__(f"{path}: {key}: {message}")


def _storable_text(value: object) -> bool:
    # HDF5 strings are UTF-8 and cannot hold NUL (names are even truncated at it silently): refuse, don't lose text.
    if not isinstance(value, str) or "\0" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, eq=False)
class Episode:
    """One demonstration: N synchronised frames of images, measured joints and commanded joints.

    ``qvel`` and ``effort`` are None when the source did not measure them. ``sim`` says the episode was recorded
    in the simulator (True) or on a real robot (False); it defaults to True, what the simulator recorder writes,
    and the ROS record node passes its ``sim`` parameter, False by default (ACT shifts real-robot actions by one step).
    """

    images: dict[str, np.ndarray]
    qpos: np.ndarray
    action: np.ndarray
    qvel: np.ndarray | None
    fps: float
    embodiment: str
    task: str
    instruction: str
    joint_names: tuple[str, ...]
    seed: int | None = None
    success: bool | None = None
    effort: np.ndarray | None = None
    sim: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        if not self.joint_names or len(set(self.joint_names)) != len(self.joint_names):
            raise EpisodeError("joint_names", f"must be non-empty and unique, got {self.joint_names}")
        for name in ("embodiment", "task", "instruction", "joint_names"):
            value = getattr(self, name)
            if not all(_storable_text(v) for v in ([value] if name != "joint_names" else value)):
                raise EpisodeError(name, f"must be UTF-8 text without NUL characters, got {value!r}")
        if not isinstance(self.fps, int | float | np.number) or not (np.isfinite(self.fps) and self.fps > 0):
            raise EpisodeError("fps", f"must be a finite number > 0, got {self.fps}")
        if not isinstance(self.sim, bool | np.bool_):
            raise EpisodeError("sim", f"must be a bool, got {self.sim!r}")
        object.__setattr__(self, "sim", bool(self.sim))
        width = len(self.joint_names)
        n = None
        for name in ("qpos", "action", *_OPTIONAL_FIELDS):
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_FIELDS:
                continue
            arr = np.asarray(value)
            if arr.ndim != 2 or arr.shape[1] != width or not np.issubdtype(arr.dtype, np.number):
                raise EpisodeError(name, f"expected a numeric (N, {width}) array, got {arr.dtype} {arr.shape}")
            arr = arr.astype(np.float64, copy=False)
            if not np.all(np.isfinite(arr)):
                raise EpisodeError(name, "contains NaN or infinite values")
            n = arr.shape[0] if n is None else n
            if arr.shape[0] != n:
                raise EpisodeError(name, f"has {arr.shape[0]} frames, qpos has {n}")
            object.__setattr__(self, name, arr)
        if n is None or n < 1:
            raise EpisodeError("qpos", "an episode needs at least one frame")
        for camera, frames in self.images.items():
            key = f"images/{camera}"
            if not camera or not _storable_text(camera) or "/" in camera:
                raise EpisodeError(key, "camera names must be non-empty UTF-8 text without '/' or NUL")
            if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
                raise EpisodeError(key, f"must be a uint8 array, got {getattr(frames, 'dtype', type(frames))}")
            if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] != n:
                raise EpisodeError(key, f"expected shape ({n}, H, W, 3), got {frames.shape}")

    @property
    def length(self) -> int:
        """Number of frames N."""
        return int(self.qpos.shape[0])


def _stored_arrays(episode: Episode) -> dict[str, np.ndarray]:
    """The joint datasets as written: float32, unmeasured optional fields as zeros."""
    stored = {}
    for name in _FIELD_KEYS:
        value = getattr(episode, name)
        # Finite float64 values beyond float32's range cast to inf, which would make the file unreadable: refuse.
        with np.errstate(over="ignore"):
            array = np.zeros(episode.qpos.shape, _STORED) if value is None else value.astype(_STORED)
        if not np.all(np.isfinite(array)):
            raise EpisodeError(name, "has values beyond the float32 range the file stores")
        stored[name] = array
    return stored


def _write_attrs(f: h5py.File, episode: Episode) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["sim"] = episode.sim
    f.attrs["compress"] = False  # images are raw pixels; HDF5 filters are transparent and not what this flag means
    for name in _OPTIONAL_FIELDS:
        f.attrs[f"{name}_measured"] = getattr(episode, name) is not None
    f.attrs["fps"] = float(episode.fps)
    f.attrs["embodiment"] = episode.embodiment
    f.attrs["task"] = episode.task
    f.attrs["instruction"] = episode.instruction
    f.attrs["joint_names"] = json.dumps(list(episode.joint_names))
    f.attrs["seed"] = -1 if episode.seed is None else int(episode.seed)
    f.attrs["success"] = -1 if episode.success is None else int(bool(episode.success))


def write_episode(path: Path | str, episode: Episode, compression: str | None = None) -> Path:
    """Write ``episode`` to ``path`` atomically (temporary file in the same directory, then rename).

    Joint arrays are stored as float32: :class:`EpisodeError` if a value does not fit.
    """
    if compression not in _COMPRESSIONS:
        raise ValueError(f"compression must be one of {_COMPRESSIONS}, got {compression!r}")
    arrays = _stored_arrays(episode)
    path = Path(path)
    with replaced_atomically(path) as tmp, h5py.File(tmp, "w") as f:
        f.require_group(IMAGES)  # present even without cameras: readers treat its absence as corruption
        for camera, frames in episode.images.items():
            f.create_dataset(f"{IMAGES}/{camera}", data=frames, chunks=(1, *frames.shape[1:]), compression=compression)
        for name, key in _FIELD_KEYS.items():
            f.create_dataset(key, data=arrays[name], compression=compression)
        _write_attrs(f, episode)
    return path


def _attr(f: h5py.File, path: Path, name: str) -> object:
    if name not in f.attrs:
        raise EpisodeFileError(path, f"attribute {name!r}", "missing")
    value = f.attrs[name]
    return value.decode() if isinstance(value, bytes) else value


def _int_attr(path: Path, name: str, value: object) -> int:
    if not isinstance(value, int | np.integer):
        raise EpisodeFileError(path, f"attribute {name!r}", f"expected an integer, got {value!r}")
    return int(value)


def _dataset(f: h5py.File, path: Path, key: str) -> h5py.Dataset:
    item = f.get(key)
    if not isinstance(item, h5py.Dataset):
        raise EpisodeFileError(path, key, "missing dataset")
    return item


def _open(path: Path | str) -> tuple[Path, h5py.File]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"episode file not found: {path}")
    try:
        return path, h5py.File(path, "r")
    except OSError as exc:
        raise EpisodeFileError(path, "/", f"not a readable HDF5 file ({exc})") from exc


def _cameras(f: h5py.File, path: Path) -> dict[str, h5py.Dataset]:
    group = f.get(IMAGES)
    if not isinstance(group, h5py.Group):
        raise EpisodeFileError(path, IMAGES, "missing group")
    return {name: ds for name, ds in group.items() if isinstance(ds, h5py.Dataset)}


def camera_shapes(path: Path | str) -> dict[str, tuple[int, ...]]:
    """Camera name -> image dataset shape, without reading any pixels."""
    path, f = _open(path)
    with f:
        return {name: tuple(ds.shape) for name, ds in _cameras(f, path).items()}


def _bool_attr(f: h5py.File, path: Path, name: str) -> bool:
    value = _attr(f, path, name)
    if not isinstance(value, bool | np.bool_):
        raise EpisodeFileError(path, f"attribute {name!r}", f"expected a bool, got {value!r}")
    return bool(value)


def _joint_arrays(f: h5py.File, path: Path, version: str) -> tuple[_Joints, dict[str, tuple[int, ...]], bool]:
    """Joint datasets by field (None where not measured), the shapes of unmeasured placeholders, the sim flag."""
    if version == FORMAT_V1:
        arrays: _Joints = {name: _dataset(f, path, _FIELD_KEYS[name])[()] for name in ("qpos", "action")}
        arrays["qvel"] = _dataset(f, path, _FIELD_KEYS["qvel"])[()] if _FIELD_KEYS["qvel"] in f else None
        arrays["effort"] = None
        return arrays, {}, True  # v1 files were written by the simulator recorder only
    flags = {name: _bool_attr(f, path, name) for name in _V2_ATTRS}
    if flags["compress"]:
        raise EpisodeFileError(path, "attribute 'compress'", "encoded (compressed) image rows are not supported")
    arrays, placeholders = {}, {}
    for name, key in _FIELD_KEYS.items():
        dataset = _dataset(f, path, key)
        if name in _OPTIONAL_FIELDS and not flags[f"{name}_measured"]:
            arrays[name], placeholders[name] = None, tuple(dataset.shape)
        else:
            arrays[name] = dataset[()]
    return arrays, placeholders, flags["sim"]


def read_episode(path: Path | str, load_images: bool = True) -> Episode:
    """Read and validate one episode; ``load_images=False`` leaves ``images`` empty (metadata and joints only)."""
    path, f = _open(path)
    with f:
        attrs = {name: _attr(f, path, name) for name in _REQUIRED_ATTRS}
        if attrs["format"] not in (FORMAT, FORMAT_V1):
            expected = f"{FORMAT!r} or {FORMAT_V1!r}"
            raise EpisodeFileError(path, "attribute 'format'", f"expected {expected}, got {attrs['format']!r}")
        try:
            joint_names = tuple(json.loads(str(attrs["joint_names"])))
        except (json.JSONDecodeError, TypeError) as exc:
            raise EpisodeFileError(path, "attribute 'joint_names'", f"not a JSON list ({exc})") from exc
        arrays, placeholders, sim = _joint_arrays(f, path, str(attrs["format"]))
        cameras = _cameras(f, path)
        images = {name: ds[()] for name, ds in cameras.items()} if load_images else {}
        seed, success = _int_attr(path, "seed", attrs["seed"]), _int_attr(path, "success", attrs["success"])
        try:
            episode = Episode(
                images=images,
                qpos=arrays["qpos"],
                action=arrays["action"],
                qvel=arrays["qvel"],
                effort=arrays["effort"],
                sim=sim,
                fps=float(attrs["fps"]),
                embodiment=str(attrs["embodiment"]),
                task=str(attrs["task"]),
                instruction=str(attrs["instruction"]),
                joint_names=joint_names,
                seed=None if seed < 0 else seed,
                success=None if success < 0 else bool(success),
            )
        except EpisodeError as exc:
            key = _FIELD_KEYS.get(exc.field) or (
                f"/observations/{exc.field}" if exc.field.startswith("images/") else f"attribute {exc.field!r}"
            )
            raise EpisodeFileError(path, key, str(exc)) from exc
    # Unmeasured placeholders carry no data, but the vendor loaders index them: they must fit the episode.
    for name, shape in placeholders.items():
        if shape != episode.qpos.shape:
            raise EpisodeFileError(path, _FIELD_KEYS[name], f"placeholder shape {shape}, qpos {episode.qpos.shape}")
    return episode


def read_frames(path: Path | str, camera: str, start: int, stop: int) -> np.ndarray:
    """Frames ``start:stop`` of one camera, reading only those chunks from disk."""
    path, f = _open(path)
    key = f"{IMAGES}/{camera}"
    with f:
        ds = _dataset(f, path, key)
        if not 0 <= start <= stop <= ds.shape[0]:
            raise EpisodeFileError(path, key, f"frame range [{start}, {stop}) outside [0, {ds.shape[0]})")
        return ds[start:stop]


def episode_path(directory: Path | str, index: int) -> Path:
    """The canonical file name of episode ``index`` in ``directory``."""
    if index < 0:
        raise ValueError(f"episode index must be >= 0, got {index}")
    return Path(directory) / f"episode_{index}.hdf5"  # unpadded: the vendor loaders open episode_{i}.hdf5


def list_episodes(directory: Path | str) -> list[Path]:
    """Episode files in ``directory``, ordered by episode index (numerically, so 9999 precedes 10000)."""
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := _EPISODE_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def dataset_digest(paths: Iterable[Path | str]) -> str:
    """SHA-256 over the files in sorted-name order; each file's name and size frame its bytes.

    The framing makes the digest unambiguous (moving bytes from one file to the next changes it); directories are
    not hashed, so a copied dataset keeps its digest.
    """
    files = sorted((Path(p) for p in paths), key=lambda p: (p.name, str(p)))
    if not files:
        raise ValueError("dataset_digest needs at least one file")
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()
