"""WorldModelServer: any WorldModel behind an asyncio websockets endpoint, one generation at a time.

Each connection gets a `hello` (model id, fps, cameras, size limit, and the operator's metadata: horizon, image
size, bundle hashes), then answers every `rollout` call with a `rollout_result` or an `error`. Generation runs
in a worker thread under a lock, so the event loop keeps answering `GET /healthz`, keep-alive pings and other
connections while the GPU works, and calls from several clients queue instead of sharing the GPU. Every call is
timed (queue wait, generation) and logged.

Access control happens before the websocket handshake completes: with a token, a connection without
`Authorization: Bearer <token>` gets HTTP 401. The server binds 127.0.0.1 unless told otherwise, and warns
loudly when it listens elsewhere without a token. A message over `max_message_bytes` closes that connection
with code 1009 (message too big); the server keeps serving the others.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from eva_runtime.wire import WireError
from eva_runtime.world_model.protocol import WorldModel
from eva_runtime.world_model.serving.messages import (
    MAX_REPLY_BYTES,
    ErrorCode,
    ErrorReply,
    Hello,
    MessageError,
    RolloutCall,
    RolloutReply,
    check_rollout_frames,
    decode,
    encode,
)

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "HEALTH_PATH", "WorldModelServer"]

log = logging.getLogger("eva_runtime.world_model.serving")

HEALTH_PATH = "/healthz"
# A call carries the K most recent frames of each camera: 64 MiB holds several 720p frames per camera with room.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything: treat it as exposed


class WorldModelServer:
    def __init__(
        self,
        world_model: WorldModel,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        if token is not None and not token:
            raise ValueError("an empty token would authenticate everyone; pass None for no authentication")
        self.world_model = world_model
        self.host = host
        self.port = port
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.hello = encode(
            Hello(
                world_model.model_id,
                float(world_model.fps),
                tuple(world_model.cameras),
                max_message_bytes,
                dict(metadata or {}),
            )
        )  # encoded now: metadata that cannot be sent is a start-up error, not a per-connection one
        self.requests = 0
        self.bound_port: int | None = None  # the real port once listening (differs from `port` when that is 0)
        self._started = time.monotonic()
        self._lock: asyncio.Lock | None = None  # made inside the serving loop, which owns it

    # HTTP, before the websocket handshake -------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == HEALTH_PATH:
            # No authentication here: a load balancer or an operator's curl must reach it. It says whether the
            # server is alive and busy, nothing about the model (that is in the authenticated hello).
            status = {
                "status": "ok",
                "busy": bool(self._lock is not None and self._lock.locked()),
                "requests": self.requests,
                "uptime_s": round(time.monotonic() - self._started, 3),
            }
            response = connection.respond(http.HTTPStatus.OK, json.dumps(status) + "\n")
            del response.headers["Content-Type"]  # respond() made it text/plain; headers are a multi-dict
            response.headers["Content-Type"] = "application/json"
            return response
        if self.token is None:
            return None
        given = request.headers.get("Authorization", "")
        # Constant-time comparison: timing must not reveal how many leading characters of a guess were right.
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            reason = "missing" if not given else "wrong"
            log.warning("refused a connection from %s: %s token", connection.remote_address, reason)
            response = connection.respond(http.HTTPStatus.UNAUTHORIZED, f"{reason} bearer token\n")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return None

    # Websocket ----------------------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        peer = connection.remote_address
        log.info("connected: %s", peer)
        try:
            await connection.send(self.hello)
            async for data in connection:
                reply = await self._answer(connection, data)
                if reply is None:
                    break
                await connection.send(reply)
        except ConnectionClosed as closed:
            codes = {frame.code for frame in (closed.rcvd, closed.sent) if frame is not None}
            if 1009 in codes:  # websockets closes with 1009 when a message exceeds max_size
                log.warning("closed %s: message over the %d-byte limit", peer, self.max_message_bytes)
        log.info("disconnected: %s", peer)

    async def _answer(self, connection: ServerConnection, data: bytes | str) -> bytes | None:
        """The reply to one received frame; None when the caller left while its call was queued."""
        received = time.perf_counter()
        try:
            message = decode(data, self.max_message_bytes)
            if not isinstance(message, RolloutCall):
                raise MessageError(ErrorCode.BAD_MESSAGE, f"a client sends rollout calls, not {type(message).__name__}")
            missing = [camera for camera in self.world_model.cameras if camera not in message.request.frames]
            if missing:
                raise MessageError(
                    ErrorCode.BAD_REQUEST,
                    f"rollout.frames: camera(s) {missing} missing (the model sees {list(self.world_model.cameras)})",
                    message.id,
                )
        except MessageError as error:
            log.warning("refused a message from %s: %s: %s", connection.remote_address, error.code, error)
            return encode(ErrorReply(error.call_id, error.code, str(error)))
        assert self._lock is not None
        async with self._lock:
            if connection.state is not State.OPEN:
                # A client that timed out has dropped its connection; its call would only delay the others.
                log.info("skipped rollout %d: %s left while it was queued", message.id, connection.remote_address)
                return None
            queue_s = time.perf_counter() - received
            # Blocking work (the model, and encoding a reply that may be hundreds of MB) stays off the loop.
            reply = await asyncio.to_thread(self._generate, message, queue_s)
        self.requests += 1
        return reply

    def _generate(self, call: RolloutCall, queue_s: float) -> bytes:
        request = call.request
        began = time.perf_counter()
        try:
            rollout = self.world_model.rollout(request)
            frames = check_rollout_frames(
                rollout.frames, tuple(self.world_model.cameras), request.samples, request.horizon
            )
            generation_s = time.perf_counter() - began
            reply = encode(
                RolloutReply(call.id, frames, float(rollout.fps), rollout.model_id, generation_s, queue_s),
                MAX_REPLY_BYTES,
            )
        except Exception as error:  # the model's failure is this call's answer; the server keeps serving
            log.exception("rollout %d failed", call.id)
            code = ErrorCode.GENERATION_FAILED
            text = f"{type(error).__name__}: {error}"
            if isinstance(error, MessageError | WireError):
                text = f"the world model returned unusable frames: {error}"
            return encode(ErrorReply(call.id, code, text))
        log.info(
            "rollout id=%d samples=%d horizon=%d queue=%.3fs generate=%.3fs reply=%dB",
            call.id,
            request.samples,
            request.horizon,
            queue_s,
            generation_s,
            len(reply),
        )
        return reply

    # Life cycle ---------------------------------------------------------------------------------------------

    async def start(self) -> Server:
        """Listen (inside the running loop) and return the websockets Server; `bound_port` says the real port."""
        if not _is_loopback(self.host) and self.token is None:
            log.warning(
                "!!! serving the world model on %s WITHOUT a token: anyone who can reach this port can use the "
                "GPU. Set a token (--token-env) or bind 127.0.0.1 !!!",
                self.host,
            )
        self._lock = asyncio.Lock()
        server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=self.max_message_bytes,
            # Frames are latency-bound and compress poorly relative to the CPU deflate costs on both ends.
            compression=None,
        )
        self.bound_port = server.sockets[0].getsockname()[1]
        log.info(
            "serving %s (%g fps, cameras %s) on ws://%s:%d, token %s, message limit %d bytes",
            self.world_model.model_id,
            self.world_model.fps,
            ",".join(self.world_model.cameras),
            self.host,
            self.bound_port,
            "required" if self.token else "NOT required",
            self.max_message_bytes,
        )
        return server

    async def serve_forever(
        self, ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None
    ) -> None:
        """Serve until `stop` is set (or forever); `ready(port)` is called once listening."""
        server = await self.start()
        async with server:
            if ready is not None:
                ready(self.bound_port)
            await (stop.wait() if stop is not None else server.serve_forever())

    def run(self) -> None:
        """Serve in this thread until interrupted (the `eva serve world-model` entry point)."""
        asyncio.run(self.serve_forever())

    def run_in_thread(self) -> tuple[int, Callable[[], None]]:
        """Serve from a daemon thread; return the bound port and a function that stops the server and waits."""
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        started = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                loop.run_until_complete(self.serve_forever(lambda port: started.set(), stop))
            except BaseException as error:  # reported to the starting thread below
                failure.append(error)
                started.set()
            finally:
                loop.close()

        thread = threading.Thread(target=main, name="world-model-server", daemon=True)
        thread.start()
        started.wait()
        if failure:
            raise failure[0]

        def shutdown() -> None:  # idempotent: a second call finds the loop closed and does nothing
            if not loop.is_closed():
                loop.call_soon_threadsafe(stop.set)
            thread.join(10)

        return self.bound_port, shutdown
