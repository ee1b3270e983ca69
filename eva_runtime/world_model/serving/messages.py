"""The world-model wire schema: hello, rollout call, rollout reply and error, each validated field by field.

Every message is one binary websocket frame holding a msgpack map (:mod:`eva_runtime.wire`: arrays travel as
typed buffers, nothing is ever unpickled) with a `type` and the protocol `version`. The server speaks first with
a `hello` (what it serves); the client then sends `rollout` calls and gets, for each, a `rollout_result` or an
`error` carrying the call's id. Decoding refuses a missing, mistyped, out-of-range or unknown field with a
:class:`MessageError` whose code and text name the message type and the field, so a broken peer is diagnosed
from one log line.

`RolloutRequest.privileged_state` has no field here on purpose: it is a simulator object that only test
instruments read, and it never leaves the machine it was made on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from eva_runtime.wire import DEFAULT_LIMIT, WireError, pack, unpack
from eva_runtime.world_model.protocol import RolloutRequest

__all__ = [
    "MAX_HORIZON",
    "MAX_REPLY_BYTES",
    "MAX_SAMPLES",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "ErrorReply",
    "Hello",
    "Message",
    "MessageError",
    "RolloutCall",
    "RolloutReply",
    "check_rollout_frames",
    "decode",
    "encode",
    "validate_frames",
]

PROTOCOL_VERSION = 1
# Sanity bounds far above real use (EVA samples G <= 8 rollouts of 49 frames): they stop one malformed or
# hostile call from asking the server for an unbounded amount of GPU time and memory.
MAX_SAMPLES = 64
MAX_HORIZON = 1024
MAX_INSTRUCTION_CHARS = 4096
# A reply holds G x horizon frames per camera: 8 x 49 frames of 832x480 is ~470 MB per camera. Both ends use this
# bound, so an oversized reply is a clear error on the server rather than a closed connection at the client.
MAX_REPLY_BYTES = 1024 * 1024 * 1024


class ErrorCode(StrEnum):
    BAD_MESSAGE = "bad_message"  # not a binary msgpack map, or an unknown message type
    BAD_REQUEST = "bad_request"  # a field missing, mistyped, out of range or unknown
    UNSUPPORTED_VERSION = "unsupported_version"
    GENERATION_FAILED = "generation_failed"  # the world model raised or returned malformed frames


class MessageError(ValueError):
    """A message that does not follow the schema; `code` is what the server replies with."""

    def __init__(self, code: ErrorCode, message: str, call_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.call_id = call_id  # the offending call's id when it could be read, so the reply can name it


@dataclass(frozen=True)
class Hello:
    """Sent by the server once per connection, before anything else."""

    model_id: str
    fps: float
    cameras: tuple[str, ...]
    max_message_bytes: int  # the largest call the server accepts; larger ones close the connection (1009)
    metadata: Mapping[str, Any] = field(default_factory=dict)  # from the operator: horizon, image size, hashes


@dataclass(frozen=True)
class RolloutCall:
    id: int
    request: RolloutRequest  # privileged_state is never sent: it is always None on the receiving side


@dataclass(frozen=True)
class RolloutReply:
    id: int
    frames: Mapping[str, np.ndarray]  # camera -> (G, horizon, height, width, 3) uint8
    fps: float
    model_id: str
    generation_s: float  # the world model's own wall time
    queue_s: float  # waiting for the generation lock (another call was running)


@dataclass(frozen=True)
class ErrorReply:
    id: int | None  # None when the offending message had no readable id
    code: str  # an ErrorCode value; kept a plain string so a newer server's codes still decode
    message: str


Message = Hello | RolloutCall | RolloutReply | ErrorReply


def _bad(where: str, problem: str, call_id: int | None = None) -> MessageError:
    return MessageError(ErrorCode.BAD_REQUEST, f"{where}: {problem}", call_id)


def _int(obj: Mapping, name: str, kind: str, low: int, high: int | None = None) -> int:
    value = obj[name]
    # bool is an int subclass in Python; `True` as a seed or horizon is a bug on the other side.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"{kind}.{name}", f"expected an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        allowed = f"{low}..{high}" if high is not None else f">= {low}"
        raise _bad(f"{kind}.{name}", f"{value} is outside {allowed}")
    return value


def _float(obj: Mapping, name: str, kind: str, positive: bool) -> float:
    value = obj[name]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(f"{kind}.{name}", f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise _bad(f"{kind}.{name}", f"{value} is not a finite {'positive' if positive else 'non-negative'} number")
    return float(value)


def _str(obj: Mapping, name: str, kind: str, max_chars: int, empty: bool = False) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise _bad(f"{kind}.{name}", f"expected a string, got {type(value).__name__}")
    if len(value) > max_chars or (not empty and not value):
        raise _bad(f"{kind}.{name}", f"must be {'' if empty else 'non-empty and '}at most {max_chars} characters")
    return value


def validate_frames(frames: object, ndim: int, where: str) -> dict[str, np.ndarray]:
    """camera -> uint8 array of `ndim` dimensions, the last one RGB, none empty; else a MessageError."""
    if not isinstance(frames, Mapping) or not frames:
        raise _bad(where, "expected a non-empty map of camera name -> array")
    checked = {}
    for camera, array in frames.items():
        if not isinstance(camera, str) or not camera:
            raise _bad(where, f"camera names must be non-empty strings, got {camera!r}")
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
            found = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise _bad(f"{where}[{camera}]", f"expected a uint8 array, got {found}")
        if array.ndim != ndim or array.shape[-1] != 3 or 0 in array.shape:
            raise _bad(f"{where}[{camera}]", f"expected {ndim} non-empty dimensions ending in 3, got {array.shape}")
        checked[camera] = array
    return checked


def check_rollout_frames(
    frames: Mapping[str, np.ndarray], cameras: tuple[str, ...], samples: int, horizon: int
) -> dict[str, np.ndarray]:
    """A rollout's frames are exactly what was asked: every camera, (samples, horizon, h, w, 3) uint8."""
    checked = validate_frames(frames, 5, "rollout.frames")
    missing = [camera for camera in cameras if camera not in checked]
    if missing:
        raise _bad("rollout.frames", f"camera(s) {missing} missing (cameras: {list(cameras)})")
    for camera in cameras:
        if checked[camera].shape[:2] != (samples, horizon):
            raise _bad(
                f"rollout.frames[{camera}]",
                f"shape {checked[camera].shape} does not start with (samples, horizon) = ({samples}, {horizon})",
            )
    return {camera: checked[camera] for camera in cameras}


# Field names of each message type besides `type` and `version`; anything else is refused as a likely typo.
_FIELDS = {
    "hello": ("model_id", "fps", "cameras", "max_message_bytes", "metadata"),
    "rollout": ("id", "frames", "instruction", "horizon", "seed", "samples"),
    "rollout_result": ("id", "frames", "fps", "model_id", "generation_s", "queue_s"),
    "error": ("id", "code", "message"),
}


def _to_wire(message: Message) -> dict[str, Any]:
    if isinstance(message, Hello):
        body = {
            "type": "hello",
            "model_id": message.model_id,
            "fps": message.fps,
            "cameras": list(message.cameras),
            "max_message_bytes": message.max_message_bytes,
            "metadata": dict(message.metadata),
        }
    elif isinstance(message, RolloutCall):
        request = message.request
        body = {
            "type": "rollout",
            "id": message.id,
            "frames": dict(request.frames),
            "instruction": request.instruction,
            "horizon": request.horizon,
            "seed": request.seed,
            "samples": request.samples,
        }
    elif isinstance(message, RolloutReply):
        body = {
            "type": "rollout_result",
            "id": message.id,
            "frames": dict(message.frames),
            "fps": message.fps,
            "model_id": message.model_id,
            "generation_s": message.generation_s,
            "queue_s": message.queue_s,
        }
    elif isinstance(message, ErrorReply):
        body = {"type": "error", "id": message.id, "code": str(message.code), "message": message.message}
    else:
        raise TypeError(f"cannot encode a {type(message).__name__}")
    return {"version": PROTOCOL_VERSION, **body}


def encode(message: Message, limit: int = DEFAULT_LIMIT) -> bytes:
    """The message as msgpack bytes; a WireError when it exceeds `limit` or holds an unsendable value."""
    return pack(_to_wire(message), limit)


def _from_wire(kind: str, obj: Mapping) -> Message:
    if kind == "hello":
        cameras = obj["cameras"]
        if not isinstance(cameras, list) or not cameras or not all(isinstance(c, str) and c for c in cameras):
            raise _bad("hello.cameras", "expected a non-empty list of camera names")
        metadata = obj["metadata"]
        if not isinstance(metadata, Mapping):
            raise _bad("hello.metadata", f"expected a map, got {type(metadata).__name__}")
        return Hello(
            _str(obj, "model_id", kind, 256),
            _float(obj, "fps", kind, positive=True),
            tuple(cameras),
            _int(obj, "max_message_bytes", kind, 1),
            dict(metadata),
        )
    if kind == "rollout":
        call_id = _int(obj, "id", kind, 0)
        try:
            request = RolloutRequest(
                frames=validate_frames(obj["frames"], 4, "rollout.frames"),
                instruction=_str(obj, "instruction", kind, MAX_INSTRUCTION_CHARS, empty=True),
                horizon=_int(obj, "horizon", kind, 1, MAX_HORIZON),
                seed=_int(obj, "seed", kind, 0, 2**64 - 1),  # numpy's generators take non-negative seeds
                samples=_int(obj, "samples", kind, 1, MAX_SAMPLES),
            )
        except MessageError as error:
            error.call_id = call_id
            raise
        return RolloutCall(call_id, request)
    if kind == "rollout_result":
        return RolloutReply(
            _int(obj, "id", kind, 0),
            validate_frames(obj["frames"], 5, "rollout_result.frames"),
            _float(obj, "fps", kind, positive=True),
            _str(obj, "model_id", kind, 256),
            _float(obj, "generation_s", kind, positive=False),
            _float(obj, "queue_s", kind, positive=False),
        )
    call_id = None if obj["id"] is None else _int(obj, "id", kind, 0)
    return ErrorReply(call_id, _str(obj, "code", kind, 64), _str(obj, "message", kind, 64 * 1024, empty=True))


def decode(data: bytes | str, limit: int = DEFAULT_LIMIT) -> Message:
    """One received frame as a message; a MessageError naming the problem when it does not follow the schema."""
    if not isinstance(data, bytes):
        raise MessageError(ErrorCode.BAD_MESSAGE, "expected a binary msgpack frame, got a text frame")
    try:
        obj = unpack(data, limit)
    except WireError as error:
        raise MessageError(ErrorCode.BAD_MESSAGE, f"not a valid message: {error}") from None
    if not isinstance(obj, dict):
        raise MessageError(ErrorCode.BAD_MESSAGE, f"expected a msgpack map, got {type(obj).__name__}")
    call_id = obj.get("id") if isinstance(obj.get("id"), int) and not isinstance(obj.get("id"), bool) else None
    version = obj.get("version")
    if version != PROTOCOL_VERSION:
        raise MessageError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported (this side speaks {PROTOCOL_VERSION})",
            call_id,
        )
    kind = obj.get("type")
    if kind not in _FIELDS:
        raise MessageError(
            ErrorCode.BAD_MESSAGE, f"unknown message type {kind!r} (known: {', '.join(_FIELDS)})", call_id
        )
    expected = set(_FIELDS[kind])
    present = set(obj) - {"type", "version"}
    if missing := sorted(expected - present):
        raise MessageError(ErrorCode.BAD_REQUEST, f"{kind}: missing field(s) {missing}", call_id)
    if unknown := sorted(str(key) for key in present - expected):
        raise MessageError(ErrorCode.BAD_REQUEST, f"{kind}: unknown field(s) {unknown}", call_id)
    try:
        return _from_wire(kind, obj)
    except MessageError as error:
        if error.call_id is None:
            error.call_id = call_id
        raise
