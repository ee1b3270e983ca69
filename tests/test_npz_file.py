"""`save_npz` (eva_runtime/npz_file.py): the bytes of a written `.npz` depend only on its arrays, numpy reads it
back exactly without pickle, and an array of Python objects is refused."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eva_runtime.file_hash import file_sha256
from eva_runtime.npz_file import save_npz

ARRAYS = st.dictionaries(
    st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True),
    hnp.arrays(
        st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(arrays=ARRAYS, compress=st.booleans())
def test_arrays_round_trip_and_the_same_arrays_give_the_same_bytes(tmp_path_factory, arrays, compress) -> None:
    folder = tmp_path_factory.mktemp("npz")
    save_npz(folder / "a.npz", arrays, compress)
    save_npz(folder / "b.npz", {name: value.copy() for name, value in arrays.items()}, compress)
    assert file_sha256(folder / "a.npz") == file_sha256(folder / "b.npz")
    with np.load(folder / "a.npz", allow_pickle=False) as loaded:
        assert sorted(loaded.files) == sorted(arrays)
        for name, value in arrays.items():
            assert loaded[name].dtype == value.dtype
            np.testing.assert_array_equal(loaded[name], value)


def test_no_member_carries_the_time_it_was_written(tmp_path: Path) -> None:
    save_npz(tmp_path / "t.npz", {"x": np.arange(3), "name": np.asarray("cam_high")})
    with zipfile.ZipFile(tmp_path / "t.npz") as archive:
        assert [m.filename for m in archive.infolist()] == ["x.npy", "name.npy"]
        assert {m.date_time for m in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_the_name_is_kept_as_given_and_objects_are_refused(tmp_path: Path) -> None:
    save_npz(tmp_path / "clips", {"x": np.zeros(2)})  # no ".npz" appended, unlike np.savez
    assert (tmp_path / "clips").is_file() and not (tmp_path / "clips.npz").exists()
    with pytest.raises(ValueError, match="Python objects"):
        save_npz(tmp_path / "o.npz", {"bad": np.array([{"a": 1}], dtype=object)})
    assert not (tmp_path / "o.npz").exists()  # nothing half-written left behind
