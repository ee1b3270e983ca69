"""Where a recorder's encoded messages go: the `RecordSink` interface, the CDR encoders of the recording's ROS 2
messages, and the MCAP file sink.

A recorder encodes each message once (CDR against the definitions in `ros2_schemas`) and hands the same bytes to
every sink: the episode's MCAP file here, and optionally a live view (`foxglove_live.FoxgloveLive`). Encoding
once keeps the live view from doubling the writer thread's cost, and guarantees Foxglove sees byte for byte what
the file holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from eva_runtime.records import ros2_schemas as msgs

__all__ = ["McapFileSink", "RecordSink", "cdr_encoders"]

_CHUNK_BYTES = 256 * 1024  # smaller than the library default, so a kill loses at most this much


class RecordSink(Protocol):
    """Receives every message a recorder produces, already encoded, on the recorder's writer thread."""

    def advertise(self, channels: Mapping[str, str]) -> None:
        """topic -> schema name of the channels a recording will carry, before its first message."""

    def write(self, topic: str, schema: str, data: bytes, stamp_ns: int) -> None:
        """One CDR-encoded message of `schema` (a key of `ros2_schemas.DEFINITIONS`); must not block."""


def cdr_encoders() -> dict[str, Callable[[dict], bytes]]:
    """schema name -> function from a message dict (as `ros2_schemas` builds them) to its CDR bytes."""
    # mcap_ros2's own writer encodes through this function; it has no public name for it.
    from mcap_ros2._dynamic import serialize_dynamic

    return {name: serialize_dynamic(name, text)[name] for name, text in msgs.DEFINITIONS.items()}


class McapFileSink:
    """One MCAP file: ros2 profile, ros2msg schemas, CDR channels, zstd chunks flushed to the file as they close.

    Write errors (OSError) propagate to the caller, which decides what a failed recording means."""

    def __init__(self, path: Path) -> None:
        from mcap.well_known import MessageEncoding, SchemaEncoding
        from mcap.writer import LIBRARY_IDENTIFIER, CompressionType, Writer

        from eva_runtime import __version__

        self._encoding = MessageEncoding.CDR
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close(), after finish()
        self._writer = Writer(self._file, chunk_size=_CHUNK_BYTES, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library=f"{LIBRARY_IDENTIFIER} eva_runtime/{__version__}")
        self._schemas = {
            name: self._writer.register_schema(name, SchemaEncoding.ROS2, text.encode())
            for name, text in msgs.DEFINITIONS.items()
        }
        self._channels: dict[str, int] = {}

    def advertise(self, channels: Mapping[str, str]) -> None:
        """Nothing to do: a file's channels are registered with their first message."""

    def write(self, topic: str, schema: str, data: bytes, stamp_ns: int) -> None:
        channel = self._channels.get(topic)
        if channel is None:
            channel = self._writer.register_channel(topic, self._encoding, self._schemas[schema])
            self._channels[topic] = channel
        self._writer.add_message(channel, log_time=stamp_ns, data=data, publish_time=stamp_ns)
        self._file.flush()  # a finished chunk reaches the file now, not when the process exits

    def finish(self) -> None:
        """The summary and footer: what makes the file indexed (a reader that streams needs neither)."""
        self._writer.finish()

    def close(self) -> None:
        self._file.close()
