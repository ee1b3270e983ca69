"""Foxglove: the live view of `eva run --live` and the layout in docs/foxglove_layout.json.

The live view is the Foxglove SDK's WebSocket server, checked here from the outside: a plain `websockets` client
speaking the Foxglove protocol sees every channel a recording carries advertised with its ros2msg schema,
receives byte for byte what the episode's MCAP file holds, and the server listens on 127.0.0.1 and nowhere else.
The layout is checked against a real recording: every topic it names is one a recording contains, and every
plotted field exists in that topic's messages.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import websockets
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from eva_runtime.control.autonomous_loop import LoopSettings
from eva_runtime.control.deployment import Deployment, run_episodes
from eva_runtime.records import ros2_schemas
from eva_runtime.records.foxglove_live import FoxgloveLive, LiveViewError
from eva_runtime.records.mcap_recorder import RecorderTopics, recorder_channels
from eva_runtime.records.outcome_log import OutcomeLog
from eva_runtime.records.record_sinks import cdr_encoders
from tests.conftest import REPO
from tests.recording_helpers import EMBODIMENT, record_an_episode
from tests.test_deployment import LEARNED, robot_and_planner

CHANNELS = recorder_channels(RecorderTopics.for_embodiment(EMBODIMENT, (64, 64)))
SUBPROTOCOL = "foxglove.sdk.v1"  # what this SDK's server accepts (it refuses foxglove.websocket.v1 with HTTP 400)
LAYOUT = REPO / "docs" / "foxglove_layout.json"


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port`, from the kernel's socket tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian 32-bit words
            found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words))
    return found


async def advertised(ws) -> dict[str, dict]:
    """topic -> channel of the advertise ops that follow serverInfo, until every recorder channel is in."""
    info = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert info["op"] == "serverInfo"
    channels: dict[str, dict] = {}
    while set(CHANNELS) - set(channels):
        op = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if op["op"] == "advertise":
            channels.update({channel["topic"]: channel for channel in op["channels"]})
    return channels


async def subscribe_and_record(live: FoxgloveLive, tmp_path: Path) -> tuple[dict, dict, list[tuple[int, bytes]]]:
    """Connect, subscribe to the filtered command (and /eva/mode for a probe), record an episode through the live
    view, and return the advertised channels, the recording's entry and the (log time, payload) received."""
    async with websockets.connect(live.url, subprotocols=[SUBPROTOCOL]) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        channels = await advertised(ws)
        wanted = {1: channels["/eva/command/filtered"]["id"], 2: channels["/eva/mode"]["id"]}
        subscriptions = [{"id": sid, "channelId": cid} for sid, cid in wanted.items()]
        await ws.send(json.dumps({"op": "subscribe", "subscriptions": subscriptions}))
        probe = cdr_encoders()["std_msgs/msg/String"](ros2_schemas.text("probe"))
        while True:  # the protocol does not acknowledge a subscription: a probe that arrives does
            live.write("/eva/mode", "std_msgs/msg/String", probe, 1)
            try:
                if (await asyncio.wait_for(ws.recv(), 0.2))[:5] == struct.pack("<BI", 1, 2):
                    break
            except TimeoutError:
                continue
        recording = asyncio.create_task(asyncio.to_thread(record_an_episode, tmp_path, 40, (live,)))
        received: list[tuple[int, bytes]] = []
        while not recording.done() or len(received) < 40:
            try:
                message = await asyncio.wait_for(ws.recv(), 10)
            except TimeoutError:
                break
            opcode, subscription, log_time = struct.unpack("<BIQ", message[:13])
            if opcode == 1 and subscription == 1:
                received.append((log_time, bytes(message[13:])))
        entry = (await recording)[0]
    return channels, entry, received


def test_the_live_view_advertises_every_channel_and_serves_what_the_file_holds_on_loopback_only(
    tmp_path: Path,
) -> None:
    with FoxgloveLive(port=0) as live:
        assert listening_addresses(live.port) == {"127.0.0.1"}
        live.advertise(CHANNELS)
        channels, entry, received = asyncio.run(subscribe_and_record(live, tmp_path))
    assert set(channels) == set(CHANNELS)
    for topic, schema in CHANNELS.items():
        channel = channels[topic]
        assert (channel["schemaName"], channel["encoding"], channel["schemaEncoding"]) == (schema, "cdr", "ros2msg")
        assert channel["schema"] == ros2_schemas.DEFINITIONS[schema]  # the recording's own definition
    with open(entry["path"], "rb") as handle:
        in_file = [
            (m.log_time, bytes(m.data))
            for _, c, m in make_reader(handle).iter_messages(log_time_order=False)
            if c.topic == "/eva/command/filtered"
        ]
    assert len(in_file) == 40 and received == in_file


def test_a_deployment_run_feeds_the_live_view_and_writes_no_recording_without_record(tmp_path: Path) -> None:
    robot, planner, clock = robot_and_planner()
    settings = LoopSettings(max_steps=30, pace=False)
    with FoxgloveLive(port=0) as live:
        result = run_episodes(
            Deployment.from_bundle(LEARNED, "transfer_cube"),
            robot,
            planner,
            2,
            50,
            tmp_path / "log.db",
            settings,
            clock=clock,
            instruction="transfer the cube",
            live=live,
        )
        written = live.messages
    assert written >= 2 * 30 * 3  # per tick at least the joints of both arms and the filtered command
    with OutcomeLog(tmp_path / "log.db", read_only=True) as opened:
        assert [opened.recording(r.id) for r in opened.episodes(run_id=result.run_id)] == [None, None]
    assert list(tmp_path.rglob("*.mcap")) == []


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LiveViewError, match="cannot serve"):
            FoxgloveLive(port=port)
        done = subprocess.run(
            [str(Path(sys.executable).parent / "eva"), "run", "--episodes", "1", "--live", "--live-port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert done.returncode == 2 and "--live" in done.stdout + done.stderr
    assert not (tmp_path / "artifacts").exists()  # no outcome log: nothing ran


def layout_panels(node) -> list[str]:
    """Every panel id in a layout's mosaic tree (a panel id, or a split with first and second)."""
    if isinstance(node, str):
        return [node]
    assert node["direction"] in ("row", "column") and 0 < node.get("splitPercentage", 50) < 100
    return layout_panels(node["first"]) + layout_panels(node["second"])


def layout_paths(config_by_id: dict) -> list[str]:
    """Every message path or topic the layout's panels name."""
    paths = []
    for panel, config in config_by_id.items():
        kind = panel.split("!")[0]
        if kind == "Image":
            paths.append(config["imageMode"]["imageTopic"])
        elif kind == "Plot":
            paths.extend(series["value"] for series in config["paths"])
        elif kind == "RawMessages":
            paths.append(config["topicPath"])
        elif kind == "DiagnosticSummary":
            paths.append(config["topicToRender"])
        else:
            raise AssertionError(f"a panel this test does not know: {panel}")
    return paths


def test_the_foxglove_layout_names_only_topics_and_fields_a_recording_has(tmp_path: Path) -> None:
    layout = json.loads(LAYOUT.read_text())
    assert {"configById", "layout", "globalVariables", "userNodes", "playbackConfig"} <= set(layout)
    panels = layout_panels(layout["layout"])
    assert sorted(panels) == sorted(layout["configById"])  # every panel placed once, every placed one configured
    kinds = {panel.split("!")[0] for panel in panels}
    assert kinds == {"Image", "Plot", "RawMessages", "DiagnosticSummary"}
    entry, _, _ = record_an_episode(tmp_path, ticks=80)
    first: dict[str, object] = {}
    with open(entry["path"], "rb") as handle:
        for _, channel, _, decoded in make_reader(handle, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            first.setdefault(channel.topic, decoded)
    paths = layout_paths(layout["configById"])
    images = [layout["configById"][p]["imageMode"]["imageTopic"] for p in panels if p.startswith("Image!")]
    assert images == ["/camera_f/color/image_raw/compressed", "/eva/imagined/cam_high/compressed"]  # side by side
    for path in paths:
        topic, _, field = path.partition(".")
        assert topic in first, f"{path}: no such topic in a recording"
        assert topic in CHANNELS  # and the live view advertises it
        if field:  # e.g. position[0]: that field, that index, in the topic's messages
            name, index = re.fullmatch(r"(\w+)\[(\d+)\]", field).groups()
            assert len(getattr(first[topic], name)) > int(index), path
    plotted = {path.partition(".")[0] for path in paths if "[" in path}
    assert plotted == {"/eva/command/filtered", "/puppet/joint_left"}  # commanded against measured
