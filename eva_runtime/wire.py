"""Wire format between processes and hosts: msgpack with numpy arrays as typed buffers. Never pickle.

Arrays travel as {dtype, shape, bytes} (little-endian, C order) and are rebuilt without executing anything;
only plain msgpack types and arrays of numeric dtypes are accepted, and a size limit bounds every message.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = ["WireError", "pack", "unpack"]

_ARRAY = "__ndarray__"
_ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float: no object or string arrays
DEFAULT_LIMIT = 256 * 1024 * 1024


class WireError(ValueError):
    """A message that cannot be encoded or decoded (wrong type, corrupted, too large)."""


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ALLOWED_KINDS:
            raise WireError(f"arrays of dtype {value.dtype} cannot be sent")
        array = np.asarray(value, dtype=value.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
        return {_ARRAY: True, "dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}
    if isinstance(value, np.generic):
        return value.item()
    raise WireError(f"cannot send a {type(value).__name__}")


def _decode(obj: dict) -> Any:
    if obj.get(_ARRAY) is True:
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in _ALLOWED_KINDS:
            raise WireError(f"refusing an array of dtype {dtype}")
        shape = tuple(int(n) for n in obj["shape"])
        data = obj["data"]
        if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise WireError(f"array payload of {len(data)} bytes does not match shape {shape} and dtype {dtype}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    return obj


def pack(message: Any, limit: int = DEFAULT_LIMIT) -> bytes:
    data = msgpack.packb(message, default=_encode, use_bin_type=True)
    if len(data) > limit:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {limit}")
    return data


def unpack(data: bytes, limit: int = DEFAULT_LIMIT) -> Any:
    if len(data) > limit:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {limit}")
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)
    except WireError:
        raise
    except Exception as error:  # msgpack raises several types for corrupted input
        raise WireError(f"corrupted message ({type(error).__name__}: {error})") from None
