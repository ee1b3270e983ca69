"""HDF5 episode files: float32 round trip, atomic writes, slice reads, validation errors and the data digest.

The vendor (ACT / AgileX) view of the same files and reading v1 files are in test_hdf5_vendor_layout.py.
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

from eva_runtime.records.hdf5_episodes import (
    FORMAT,
    Episode,
    EpisodeError,
    EpisodeFileError,
    camera_shapes,
    dataset_digest,
    episode_path,
    list_episodes,
    read_episode,
    read_frames,
    write_episode,
)

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
JOINTS = tuple(f"{side}_{j}" for side in ("left", "right") for j in (*(f"j{i}" for i in range(1, 7)), "gripper"))


def make_episode(
    rng: np.random.Generator, n: int = 7, h: int = 16, w: int = 16, with_qvel: bool = True, **kw
) -> Episode:
    # Effort follows qvel: a source that measures one usually measures both.
    fields = {
        "images": {cam: rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8) for cam in CAMERAS},
        "qpos": rng.normal(size=(n, 14)),
        "action": rng.normal(size=(n, 14)),
        "qvel": rng.normal(size=(n, 14)) if with_qvel else None,
        "effort": rng.normal(size=(n, 14)) if with_qvel else None,
        "fps": 30.0,
        "embodiment": "cobot_magic",
        "task": "fold_towel",
        "instruction": "fold the towel in half",
        "joint_names": JOINTS,
        "seed": 1234,
        "success": True,
    }
    fields.update(kw)
    return Episode(**fields)


def stored(values: np.ndarray) -> np.ndarray:
    """What a written joint array reads back as: rounded to the file's float32, widened to float64."""
    return values.astype(np.float32).astype(np.float64)


def assert_same(a: Episode, b: Episode) -> None:
    """``b`` is ``a`` written and read back: images exact, joint arrays float32-rounded, metadata equal."""
    assert a.images.keys() == b.images.keys()
    for cam in a.images:
        assert a.images[cam].dtype == b.images[cam].dtype == np.uint8
        np.testing.assert_array_equal(a.images[cam], b.images[cam])
    for name in ("qpos", "action", "qvel", "effort"):
        if getattr(a, name) is None:
            assert getattr(b, name) is None, name
            continue
        assert getattr(b, name).dtype == np.float64
        np.testing.assert_array_equal(getattr(b, name), stored(getattr(a, name)))
    for name in ("fps", "embodiment", "task", "instruction", "joint_names", "seed", "success", "sim", "length"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
def test_round_trip(tmp_path: Path, rng: np.random.Generator, compression: str | None) -> None:
    ep = make_episode(rng)
    path = write_episode(tmp_path / "episode_0000.hdf5", ep, compression=compression)
    back = read_episode(path)
    assert_same(ep, back)
    assert back.length == 7
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT
        assert json.loads(f.attrs["joint_names"]) == list(JOINTS)
        assert f["/observations/images/cam_high"].chunks == (1, 16, 16, 3)


@pytest.mark.parametrize(("seed", "success"), [(None, None), (0, False), (99, True)])
def test_optional_fields_round_trip(tmp_path: Path, rng: np.random.Generator, seed, success) -> None:
    ep = make_episode(rng, with_qvel=False, seed=seed, success=success)
    back = read_episode(write_episode(tmp_path / "e.hdf5", ep))
    assert back.seed == seed and back.success == success and back.qvel is None and back.effort is None
    with h5py.File(tmp_path / "e.hdf5", "r") as f:
        # Unmeasured fields are stored as zeros (vendor loaders index them unconditionally) and flagged.
        for name in ("qvel", "effort"):
            assert not f.attrs[f"{name}_measured"]
            np.testing.assert_array_equal(f[f"/observations/{name}"][()], np.zeros((7, 14), np.float32))
        assert f.attrs["seed"] == (-1 if seed is None else seed)


def test_values_beyond_float32_are_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    ep = make_episode(rng, action=np.full((7, 14), 1e300))
    with pytest.raises(EpisodeError) as info:
        write_episode(tmp_path / "e.hdf5", ep)
    assert info.value.field == "action" and "float32" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_and_replaces(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "episode_0003.hdf5"
    first, second = make_episode(rng, n=5), make_episode(rng, n=9)
    write_episode(path, first)
    write_episode(path, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_0003.hdf5"]
    assert_same(second, read_episode(path))


def test_failed_write_keeps_the_old_file(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "episode_0000.hdf5"
    good = make_episode(rng)
    write_episode(path, good)
    broken = make_episode(rng)
    # Object arrays have no HDF5 type, so the write fails after the temporary file was created.
    object.__setattr__(broken, "images", {"cam_high": np.empty((7, 16, 16, 3), dtype=object)})
    with pytest.raises(TypeError):
        write_episode(path, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["episode_0000.hdf5"]
    assert_same(good, read_episode(path))


def test_read_frames_returns_the_slice(tmp_path: Path, rng: np.random.Generator) -> None:
    ep = make_episode(rng, n=12)
    path = write_episode(tmp_path / "e.hdf5", ep)
    np.testing.assert_array_equal(read_frames(path, "cam_left_wrist", 3, 8), ep.images["cam_left_wrist"][3:8])
    assert read_frames(path, "cam_high", 4, 4).shape == (0, 16, 16, 3)
    assert camera_shapes(path) == {cam: (12, 16, 16, 3) for cam in CAMERAS}
    with pytest.raises(EpisodeFileError, match=r"cam_high.*outside"):
        read_frames(path, "cam_high", 10, 13)
    with pytest.raises(EpisodeFileError, match=r"e\.hdf5.*/observations/images/cam_nope.*missing"):
        read_frames(path, "cam_nope", 0, 1)


def test_read_without_images(tmp_path: Path, rng: np.random.Generator) -> None:
    ep = make_episode(rng)
    back = read_episode(write_episode(tmp_path / "e.hdf5", ep), load_images=False)
    assert back.images == {}
    np.testing.assert_array_equal(back.action, stored(ep.action))


def _corrupt(path: Path, edit) -> None:
    with h5py.File(path, "a") as f:
        edit(f)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda f: f.__delitem__("/observations/qpos"), "/observations/qpos"),
        (lambda f: f.__delitem__("/action"), "/action"),
        (lambda f: f.__delitem__("/observations/images"), "/observations/images"),
        (lambda f: f.attrs.__delitem__("fps"), "attribute 'fps'"),
        (lambda f: f.attrs.__delitem__("joint_names"), "attribute 'joint_names'"),
        (lambda f: f.attrs.__setitem__("format", "something-else"), "attribute 'format'"),
        (lambda f: f.attrs.__setitem__("fps", 0.0), "attribute 'fps'"),
        (lambda f: f.attrs.__setitem__("seed", "seven"), "attribute 'seed'"),
        (lambda f: f.attrs.__setitem__("joint_names", "not json"), "attribute 'joint_names'"),
        (lambda f: f.attrs.__setitem__("joint_names", json.dumps(list(JOINTS[:13]))), "/observations/qpos"),
        (lambda f: f.__delitem__("/observations/effort"), "/observations/effort"),
        (lambda f: f.__delitem__("/observations/qvel"), "/observations/qvel"),
        (lambda f: f.attrs.__delitem__("sim"), "attribute 'sim'"),
        (lambda f: f.attrs.__setitem__("sim", "yes"), "attribute 'sim'"),
        (lambda f: f.attrs.__delitem__("effort_measured"), "attribute 'effort_measured'"),
        (lambda f: f.attrs.__setitem__("compress", True), "attribute 'compress'"),
    ],
)
def test_missing_or_bad_metadata_names_file_and_key(tmp_path: Path, rng: np.random.Generator, edit, key) -> None:
    path = write_episode(tmp_path / "episode_0001.hdf5", make_episode(rng))
    _corrupt(path, edit)
    with pytest.raises(EpisodeFileError) as info:
        read_episode(path)
    assert str(path) in str(info.value) and key in str(info.value)
    assert info.value.path == path


def _replace(key: str, data: np.ndarray):
    def edit(f: h5py.File) -> None:
        del f[key]
        f.create_dataset(key, data=data)

    return edit


@pytest.mark.parametrize(
    ("key", "data"),
    [
        ("/observations/qpos", np.zeros((7, 13))),
        ("/action", np.zeros((6, 14))),
        ("/observations/qpos", np.full((7, 14), np.nan)),
        ("/action", np.full((7, 14), np.inf)),
        ("/observations/qvel", np.zeros((8, 14))),
        ("/observations/effort", np.zeros((7, 12))),
        ("/observations/effort", np.full((7, 14), np.nan)),
        ("/observations/images/cam_high", np.zeros((7, 16, 16, 3), dtype=np.float32)),
        ("/observations/images/cam_high", np.zeros((7, 16, 16, 4), dtype=np.uint8)),
        ("/observations/images/cam_left_wrist", np.zeros((5, 16, 16, 3), dtype=np.uint8)),
    ],
)
def test_bad_datasets_name_file_and_key(tmp_path: Path, rng: np.random.Generator, key: str, data) -> None:
    path = write_episode(tmp_path / "episode_0002.hdf5", make_episode(rng))
    _corrupt(path, _replace(key, data))
    with pytest.raises(EpisodeFileError) as info:
        read_episode(path)
    assert str(path) in str(info.value) and key in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"qpos": np.full((7, 14), np.nan)}, "qpos"),
        ({"action": np.zeros((6, 14))}, "action"),
        ({"qvel": np.zeros((7, 12))}, "qvel"),
        ({"effort": np.zeros((6, 14))}, "effort"),
        ({"sim": "yes"}, "sim"),
        ({"fps": 0.0}, "fps"),
        ({"fps": "30"}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"joint_names": ("a", "a")}, "joint_names"),
        ({"images": {"cam_high": np.zeros((7, 4, 4, 3), dtype=np.int16)}}, "images/cam_high"),
        ({"images": {"cam/high": np.zeros((7, 4, 4, 3), dtype=np.uint8)}}, "images/cam/high"),
        ({"images": {"cam\0high": np.zeros((7, 4, 4, 3), dtype=np.uint8)}}, "images/cam\0high"),
        ({"instruction": "fold\0"}, "instruction"),
        ({"task": "fold\ud800"}, "task"),
        ({"embodiment": None}, "embodiment"),
        ({"joint_names": (*JOINTS[:13], "grip\0per")}, "joint_names"),
        ({"qpos": np.zeros((0, 14)), "action": np.zeros((0, 14)), "qvel": None, "effort": None, "images": {}}, "qpos"),
    ],
)
def test_episode_validation_names_the_field(rng: np.random.Generator, change: dict, field: str) -> None:
    with pytest.raises(EpisodeError) as info:
        make_episode(rng, **change)
    assert info.value.field == field and repr(field) in str(info.value)


def test_list_and_path(tmp_path: Path, rng: np.random.Generator) -> None:
    ep = make_episode(rng, n=1, h=2, w=2)
    for index in (10000, 2, 9999, 0):
        write_episode(episode_path(tmp_path, index), ep)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "episode_x.hdf5").write_text("x")
    assert episode_path(tmp_path, 2) == tmp_path / "episode_2.hdf5"  # as ACT's and AgileX's loaders open it
    names = [p.name for p in list_episodes(tmp_path)]
    assert names == ["episode_0.hdf5", "episode_2.hdf5", "episode_9999.hdf5", "episode_10000.hdf5"]  # numeric order
    write_episode(tmp_path / "episode_0003.hdf5", ep)  # a zero-padded name (earlier recordings) still lists
    assert [p.name for p in list_episodes(tmp_path)][2] == "episode_0003.hdf5"
    with pytest.raises(ValueError, match="index"):
        episode_path(tmp_path, -1)


def test_not_an_hdf5_file(tmp_path: Path) -> None:
    path = tmp_path / "episode_0000.hdf5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(EpisodeFileError, match=r"episode_0000\.hdf5"):
        read_episode(path)
    with pytest.raises(FileNotFoundError, match=r"episode_0001\.hdf5"):
        read_episode(tmp_path / "episode_0001.hdf5")


def test_dataset_digest(tmp_path: Path) -> None:
    files = []
    for name, content in (("b.bin", b"hello"), ("a.bin", b"world"), ("c.bin", bytes(range(256)) * 100)):
        (tmp_path / name).write_bytes(content)
        files.append(tmp_path / name)
    digest = dataset_digest(files)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert dataset_digest(reversed(files)) == digest
    assert dataset_digest([str(p) for p in files[1:] + files[:1]]) == digest
    data = bytearray(files[2].read_bytes())
    data[1234] ^= 0x01
    files[2].write_bytes(bytes(data))
    assert dataset_digest(files) != digest
    files[2].write_bytes(bytes(range(256)) * 100)
    assert dataset_digest(files) == digest
    # Moving bytes across a file boundary keeps the concatenation but must change the digest.
    (tmp_path / "b.bin").write_bytes(b"hell")
    (tmp_path / "a.bin").write_bytes(b"oworld")
    assert dataset_digest(files) != digest
    with pytest.raises(ValueError):
        dataset_digest([])


@settings(max_examples=30)
@given(
    n=st.integers(min_value=1, max_value=12),
    cams=st.integers(min_value=0, max_value=3),
    h=st.integers(min_value=1, max_value=6),
    w=st.integers(min_value=1, max_value=6),
    seed=st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
    success=st.one_of(st.none(), st.booleans()),
    with_qvel=st.booleans(),
    with_effort=st.booleans(),
    sim=st.booleans(),
    values=st.integers(min_value=0, max_value=2**32 - 1),
    # 1e-300 underflows to 0 in float32 (still a faithful float32 rounding); 1e30 is near its range's top.
    scale=st.sampled_from([1e-300, 1e-6, 1.0, 1e6, 1e30]),
    text=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=20),
)
def test_round_trip_property(n, cams, h, w, seed, success, with_qvel, with_effort, sim, values, scale, text) -> None:
    rng = np.random.default_rng(values)
    ep = Episode(
        images={CAMERAS[i]: rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8) for i in range(cams)},
        qpos=rng.normal(size=(n, 14)) * scale,
        action=rng.normal(size=(n, 14)) * scale,
        qvel=rng.normal(size=(n, 14)) if with_qvel else None,
        effort=rng.normal(size=(n, 14)) * scale if with_effort else None,
        sim=sim,
        fps=float(rng.uniform(1.0, 200.0)),
        embodiment=text,
        task=text[::-1],
        instruction=text + " now",
        joint_names=JOINTS,
        seed=seed,
        success=success,
    )
    with tempfile.TemporaryDirectory() as tmp:
        assert_same(ep, read_episode(write_episode(Path(tmp) / "episode_0000.hdf5", ep)))
