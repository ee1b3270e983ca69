"""RemoteWorldModel: the WorldModel protocol over a websocket to `eva serve world-model`; synchronous, never hangs.

The constructor connects and reads the server's hello, so `model_id`, `fps` and `cameras` are the served
model's (the planner checks fps against the IDM at once, before the arms move). `rollout` sends one call and
waits at most `timeout_s` for its reply. A connection found dead is replaced (a few attempts with backoff,
within the same deadline) and the call sent again: calls are seeded, so repeating one is harmless. Everything
that stops an answer (refused or lost connection, timeout, refused token, a server-side error, a malformed
reply, a server that now serves another model) raises :class:`WorldModelUnavailable`; the planner turns it
into a rejection and the robot holds.

`RolloutRequest.privileged_state` is never sent: it is a simulator object only test instruments read, so the
oracle cannot be served (the server refuses it); serve a learned model instead.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from eva_runtime.wire import WireError
from eva_runtime.world_model.protocol import Rollout, RolloutRequest
from eva_runtime.world_model.serving.messages import (
    MAX_REPLY_BYTES,
    ErrorReply,
    Hello,
    MessageError,
    RolloutCall,
    RolloutReply,
    check_rollout_frames,
    decode,
    encode,
    validate_frames,
)

__all__ = ["RemoteRollout", "RemoteWorldModel", "WorldModelUnavailable"]

CONNECT_ATTEMPTS = 3
FIRST_BACKOFF_S = 0.05  # doubled after each failed attempt; short: a robot holds while we wait


class WorldModelUnavailable(RuntimeError):  # noqa: N818  (the name the planner and callers catch)
    """The remote world model gave no usable answer (unreachable, lost, too slow, refused, or failed)."""


@dataclass(frozen=True)
class RemoteRollout(Rollout):
    queue_s: float = 0.0  # the call waited this long on the server for another call's generation
    round_trip_s: float = 0.0  # send to reply, as this client measured it (network and encoding included)


class _RetryableError(Exception):
    """A connection attempt that may succeed if tried again (refused, reset, timed out)."""


class RemoteWorldModel:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"world model url {url!r} must start with ws:// or wss://")
        if timeout_s <= 0 or (connect_timeout_s is not None and connect_timeout_s <= 0):
            raise ValueError(f"timeouts must be positive, got {timeout_s} and {connect_timeout_s}")
        self.url = url
        self.token = token
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s if connect_timeout_s is not None else timeout_s)
        self._stack: ExitStack | None = None
        self._connection: ClientConnection | None = None
        self._hello: Hello | None = None
        self._lock = threading.Lock()  # one call on the connection at a time
        self._next_id = 0
        hello = self._connect(time.monotonic() + self.connect_timeout_s)
        self.model_id = hello.model_id
        self.fps = hello.fps
        self.cameras = hello.cameras
        self.metadata = dict(hello.metadata)  # what the operator published: horizon, image size, bundle hashes
        self.max_message_bytes = hello.max_message_bytes

    # Connection ---------------------------------------------------------------------------------------------

    def _open(self, timeout_s: float) -> Hello:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        stack = ExitStack()
        try:
            # Held open through an ExitStack: `connect` is a context manager, and this connection outlives a call.
            connection = stack.enter_context(
                connect(
                    self.url,
                    additional_headers=headers,
                    open_timeout=timeout_s,
                    close_timeout=1.0,  # closing a dead server's connection must not stall a held robot
                    max_size=MAX_REPLY_BYTES,
                    compression=None,  # frames: deflate costs more CPU time than it saves on the wire
                )
            )
            hello = decode(connection.recv(timeout=timeout_s), MAX_REPLY_BYTES)
        except InvalidStatus as error:
            stack.close()
            status = error.response.status_code
            if status == 401:
                given = "no token was given" if not self.token else "the token was refused"
                raise WorldModelUnavailable(f"authentication failed at {self.url}: {given} (HTTP 401)") from None
            raise WorldModelUnavailable(f"{self.url} refused the websocket connection (HTTP {status})") from None
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as error:
            stack.close()
            raise _RetryableError(f"{type(error).__name__}: {error}") from None
        except MessageError as error:
            stack.close()
            raise WorldModelUnavailable(f"{self.url} sent an unusable hello: {error}") from None
        if not isinstance(hello, Hello):
            stack.close()
            raise WorldModelUnavailable(f"{self.url} did not start with a hello (got {type(hello).__name__})")
        known = self._hello
        identity = (hello.model_id, hello.fps, hello.cameras)
        if known is not None and (known.model_id, known.fps, known.cameras) != identity:
            stack.close()  # a restarted server with another model must not be used in place of the first one
            raise WorldModelUnavailable(
                f"{self.url} now serves {hello.model_id} at {hello.fps} fps with cameras {list(hello.cameras)}; "
                f"this client was made for {known.model_id} at {known.fps} fps with {list(known.cameras)}"
            )
        self._stack, self._connection, self._hello = stack, connection, hello
        return hello

    def _connect(self, deadline: float) -> Hello:
        delay, problem = FIRST_BACKOFF_S, "no attempt made"
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return self._open(min(remaining, self.connect_timeout_s))
            except _RetryableError as error:
                problem = f"attempt {attempt}: {error}"
            if attempt < CONNECT_ATTEMPTS:
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                delay *= 2
        raise WorldModelUnavailable(f"cannot reach the world model server at {self.url} ({problem})")

    def _drop(self) -> None:
        stack, self._stack, self._connection = self._stack, None, None
        if stack is not None:
            stack.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> RemoteWorldModel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Calls --------------------------------------------------------------------------------------------------

    def rollout(self, request: RolloutRequest) -> RemoteRollout:
        missing = [camera for camera in self.cameras if camera not in request.frames]
        if missing:
            raise ValueError(f"request.frames lacks camera(s) {missing}; {self.model_id} sees {list(self.cameras)}")
        # Only the cameras the model sees travel, and never privileged_state (see the module docstring).
        frames = validate_frames({camera: request.frames[camera] for camera in self.cameras}, 4, "request.frames")
        with self._lock:
            self._next_id += 1
            call = RolloutCall(
                self._next_id,
                RolloutRequest(frames, request.instruction, request.horizon, request.seed, request.samples),
            )
            try:
                data = encode(call, self.max_message_bytes)
            except WireError as error:
                raise WorldModelUnavailable(
                    f"the rollout call is too large for {self.url}: {error} (the server's limit is set with "
                    "`eva serve world-model --max-message-mb`)"
                ) from None
            began = time.perf_counter()
            deadline = time.monotonic() + self.timeout_s
            reply = self._call(call.id, data, deadline)
            round_trip_s = time.perf_counter() - began
        try:
            frames = check_rollout_frames(reply.frames, self.cameras, request.samples, request.horizon)
        except MessageError as error:
            raise WorldModelUnavailable(f"{self.url} returned unusable frames: {error}") from None
        if abs(reply.fps - self.fps) > 1e-9:
            raise WorldModelUnavailable(f"{self.url} returned frames at {reply.fps} fps, its hello said {self.fps}")
        return RemoteRollout(frames, reply.fps, reply.generation_s, reply.model_id, reply.queue_s, round_trip_s)

    def _call(self, call_id: int, data: bytes, deadline: float) -> RolloutReply:
        for attempt in (1, 2):  # a connection found dead is replaced once, within the same deadline
            if self._connection is None:
                self._connect(deadline)
            try:
                self._connection.send(data)
                return self._receive(call_id, deadline)
            except TimeoutError:
                self._drop()  # its late reply must not be taken for the next call's
                raise WorldModelUnavailable(f"no reply from {self.url} within {self.timeout_s} s") from None
            except (ConnectionClosed, OSError) as error:
                self._drop()
                if _too_big(error):
                    raise WorldModelUnavailable(
                        f"{self.url} closed the connection: message too big ({error})"
                    ) from None
                if attempt == 2 or time.monotonic() >= deadline:
                    raise WorldModelUnavailable(f"connection to {self.url} lost: {error}") from None
        raise AssertionError("unreachable")

    def _receive(self, call_id: int, deadline: float) -> RolloutReply:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                message = decode(self._connection.recv(timeout=remaining), MAX_REPLY_BYTES)
            except MessageError as error:
                self._drop()
                raise WorldModelUnavailable(f"{self.url} sent an unusable reply: {error}") from None
            if isinstance(message, ErrorReply) and message.id in (call_id, None):
                raise WorldModelUnavailable(f"{self.url} answered {message.code}: {message.message}")
            if isinstance(message, RolloutReply) and message.id == call_id:
                return message
            # Anything else answers an earlier call whose reply came too late: skip it.


def _too_big(error: Exception) -> bool:
    frames = (getattr(error, "rcvd", None), getattr(error, "sent", None))
    return any(frame is not None and frame.code == 1009 for frame in frames)
