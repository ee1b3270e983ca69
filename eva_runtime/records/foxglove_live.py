"""FoxgloveLive: the live view of `eva run --live`, a record sink that serves a recording's streams to Foxglove.

It is a WebSocket server of the Foxglove SDK (`foxglove-sdk`; no ROS) bound to 127.0.0.1 only: the streams carry
camera images and the robot's commands, so reaching them from another machine takes an explicit tunnel (ssh -L),
never an open port. Each topic is a channel with the recording's own ros2msg schema and CDR payloads, so the same
Foxglove layout (docs/foxglove_layout.json) shows a live run and a recorded one. The recorder's writer thread
calls `write`; the SDK buffers per client and drops the oldest data for a slow one, so a viewer never slows the
writer, let alone the control thread. Channels are advertised when a run starts (`advertise`), before any
message, and live as long as the server, across episodes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from eva_runtime.records import ros2_schemas as msgs

__all__ = ["LOOPBACK", "FoxgloveLive", "LiveViewError"]

LOOPBACK = "127.0.0.1"


class LiveViewError(RuntimeError):
    """The live view cannot start (the port is taken); raised before the robot moves."""


class FoxgloveLive:
    """A Foxglove WebSocket server on 127.0.0.1:`port` (0: any free port; see :attr:`port`); close when done."""

    def __init__(self, port: int = 8766, name: str = "eva_runtime") -> None:
        import foxglove

        self._foxglove = foxglove
        # A context of its own: channels of another server (or of a test) in this process never mix with ours.
        self._context = foxglove.Context()
        try:
            self._server = foxglove.start_server(name=name, host=LOOPBACK, port=port, context=self._context)
        except RuntimeError as error:  # FoxgloveError: the port is taken or cannot be bound
            raise LiveViewError(f"cannot serve the live view on {LOOPBACK}:{port}: {error}") from error
        self._channels: dict[str, object] = {}
        self._lock = threading.Lock()  # advertise runs on the caller's thread, write on a recorder's
        self.messages = 0

    @property
    def port(self) -> int:
        return int(self._server.port)

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    def app_url(self) -> str | None:
        """A Foxglove app link that opens this server as the data source."""
        return self._server.app_url()

    def advertise(self, channels: Mapping[str, str]) -> None:
        for topic, schema in channels.items():
            self._channel(topic, schema)

    def write(self, topic: str, schema: str, data: bytes, stamp_ns: int) -> None:
        self._channel(topic, schema).log(data, log_time=stamp_ns)
        self.messages += 1

    def _channel(self, topic: str, schema: str):
        with self._lock:
            channel = self._channels.get(topic)
            if channel is None:
                definition = msgs.DEFINITIONS[schema].encode()
                described = self._foxglove.Schema(name=schema, encoding="ros2msg", data=definition)
                channel = self._foxglove.Channel(topic, schema=described, message_encoding="cdr", context=self._context)
                self._channels[topic] = channel
            return channel

    def close(self) -> None:
        """Stop the server (clients are disconnected) and close every channel; safe to call twice."""
        self._server.stop()
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    def __enter__(self) -> FoxgloveLive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
