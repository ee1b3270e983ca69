"""The msgpack wire format: arrays round-trip exactly, nothing executable gets through, limits hold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eva_runtime.wire import WireError, pack, unpack

DTYPES = st.sampled_from([np.uint8, np.int32, np.int64, np.float32, np.float64, np.bool_])


@settings(max_examples=200)
@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, max_side=6)), st.text(max_size=20))
def test_arrays_and_plain_values_round_trip(array: np.ndarray, text: str) -> None:
    message = {"frames": array, "note": text, "nested": [1, 2.5, None, {"t": np.float64(3.0)}]}
    back = unpack(pack(message))
    assert back["frames"].dtype == array.dtype and back["frames"].shape == array.shape
    assert np.array_equal(back["frames"], array, equal_nan=array.dtype.kind == "f")
    assert back["note"] == text and back["nested"] == [1, 2.5, None, {"t": 3.0}]


def test_non_numeric_arrays_and_objects_are_refused() -> None:
    with pytest.raises(WireError, match="dtype"):
        pack({"x": np.array(["a", "b"])})
    with pytest.raises(WireError, match="cannot send"):
        pack({"x": object()})


def test_corrupted_or_forged_messages_are_errors() -> None:
    with pytest.raises(WireError, match="corrupted"):
        unpack(b"\xc1\xff\x00garbage")
    forged = pack({"__ndarray__": True, "dtype": "<f8", "shape": [1000], "data": b"\x00" * 8})
    with pytest.raises(WireError, match="does not match"):
        unpack(forged)
    forged_object = pack({"__ndarray__": True, "dtype": "|O", "shape": [1], "data": b"\x00" * 8})
    with pytest.raises(WireError, match="refusing"):
        unpack(forged_object)


def test_size_limit_applies_both_ways() -> None:
    big = {"frames": np.zeros(1000, dtype=np.uint8)}
    with pytest.raises(WireError, match="exceeds"):
        pack(big, limit=100)
    with pytest.raises(WireError, match="exceeds"):
        unpack(pack(big), limit=100)
