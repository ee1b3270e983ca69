"""Episode recordings as MCAP, read back with independent readers (the `mcap` library's readers and rosbags).

The control loop runs on simulated time with a fake robot and an in-process planner whose plans carry imagined
frames; the recording is read back and compared with what the loop did. A killed writer process, a full disk
(/dev/full) and malformed camera frames are the failure cases: the file stays readable up to its last chunk, the
loop is never blocked, and what was not written is counted in the summary the outcome log keeps.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcap.exceptions import EndOfFile
from mcap.reader import make_reader
from mcap.records import Channel, Message
from mcap.stream_reader import StreamReader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from eva_runtime.control.executor import Plan
from eva_runtime.records import ros2_schemas
from eva_runtime.records.mcap_recorder import EpisodeRecorder, RecorderTopics, RecordingError, check_recording_dir
from tests.conftest import CALIBRATION
from tests.recording_helpers import EMBODIMENT, record_an_episode

TOPICS = RecorderTopics.for_embodiment(EMBODIMENT, (64, 64))


def decoded_messages(path: Path) -> list[tuple[int, str, object]]:
    """(log time, topic, decoded message) of every message, through the library's indexed reader."""
    with open(path, "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        return [(m.log_time, c.topic, d) for _, c, m, d in reader.iter_decoded_messages()]


def test_a_recorded_episode_reads_back_with_the_mcap_readers_as_what_the_loop_did(tmp_path: Path) -> None:
    entry, results, _ = record_an_episode(tmp_path)
    path = Path(entry["path"])
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["dropped"] == 0 and entry["refused"] == 0 and entry["error"] is None
    with open(path, "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        assert summary is not None and summary.statistics.chunk_count >= 1  # chunked, with an index
        assert {c.compression for c in summary.chunk_indexes} == {"zstd"}
        schemas = {s.name: s.encoding for s in summary.schemas.values()}
        assert set(schemas.values()) == {"ros2msg"}
        messages = list(reader.iter_decoded_messages())
    by_topic: dict[str, list] = {}
    for _, channel, _, decoded in messages:
        by_topic.setdefault(channel.topic, []).append(decoded)
    assert entry["messages"] == len(messages)
    ticks = len(results)
    assert len(by_topic["/eva/command/filtered"]) == ticks
    sent = np.array([m.position for m in by_topic["/eva/command/filtered"]])
    np.testing.assert_array_equal(sent, np.array([r.result.command for r in results]))
    assert len(by_topic["/puppet/joint_left"]) == ticks and len(by_topic["/puppet/joint_left"][0].position) == 7
    camera_topics = [f"{c.topic}/compressed" for c in EMBODIMENT.cameras]
    assert all(len(by_topic[t]) == ticks // 4 + (ticks % 4 > 0) for t in camera_topics)  # 12.5 fps of 50 Hz
    installed = [r.installed for r in results if r.installed is not None]
    plans = by_topic["/eva/plan"]
    assert len(plans) == len(installed) > 1
    np.testing.assert_allclose([p.positions for p in plans[0].points], installed[0][1].actions)
    info = [json.loads(m.data) for m in by_topic["/eva/plan_info"]]
    assert [i["request_id"] for i in info] == [i[0] for i in installed] and info[0]["score"] == 0.75
    assert len(by_topic["/eva/imagined/cam_high/compressed"]) == 4 * len(installed)
    modes = [json.loads(m.data) for m in by_topic["/eva/mode"]]
    assert [m["trigger"] for m in modes if m["accepted"]][:2] == ["operator_estop", "operator_release"]
    assert by_topic["/diagnostics"][0].status[0].name == "eva_runtime: recorder"


def test_rosbags_opens_the_recording_without_this_package(tmp_path: Path) -> None:
    entry, results, _ = record_an_episode(tmp_path, ticks=40)
    with AnyReader([Path(entry["path"])], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        counts = Counter(c.topic for c in reader.connections for _ in range(c.msgcount))
        image = next(
            reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic.endswith("/compressed")
        )
    assert counts["/eva/command/filtered"] == len(results)
    assert image.format == "jpeg" and bytes(image.data[:2]) == b"\xff\xd8"  # a JPEG that any viewer decodes


def test_the_message_definitions_are_the_standard_ros2_interfaces() -> None:
    store = get_typestore(Stores.ROS2_HUMBLE)
    for name, definition in ros2_schemas.DEFINITIONS.items():
        assert definition == store.generate_msgdef(name, ros_version=2)[0], name


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 40).flatmap(
        lambda n: st.lists(
            st.lists(st.floats(-10, 10, allow_nan=False), min_size=14, max_size=14), min_size=n, max_size=n
        )
    ),
    st.sampled_from([12.5, 25.0, 50.0]),
)
def test_a_plan_round_trips_through_the_recording_exactly(tmp_path_factory, actions, fps) -> None:
    path = tmp_path_factory.mktemp("plan") / "plan.mcap"
    recorder = EpisodeRecorder(path, TOPICS)
    recorder.plan(7, Plan(2.0, fps, np.array(actions), "m", 0.5))
    assert recorder.close().error is None
    decoded = [m for _, topic, m in decoded_messages(path) if topic == "/eva/plan"]
    points = decoded[0].points
    np.testing.assert_array_equal([p.positions for p in points], np.array(actions))
    offsets = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in points]
    np.testing.assert_allclose(offsets, np.arange(len(actions)) / fps, atol=1e-9)


def test_a_killed_recorder_leaves_a_file_readable_up_to_its_last_chunk(tmp_path: Path) -> None:
    path = tmp_path / "killed.mcap"
    script = textwrap.dedent(
        f"""
        import os, signal, time
        import numpy as np
        from eva_runtime.embodiment import load_embodiment
        from eva_runtime.records.mcap_recorder import EpisodeRecorder, RecorderTopics
        topics = RecorderTopics.for_embodiment(load_embodiment({str(CALIBRATION / "aloha_sim.yaml")!r}), (64, 64))
        recorder = EpisodeRecorder({str(path)!r}, topics)
        rng = np.random.default_rng(0)
        for step in range(100000):
            recorder.frame(step * 0.08, "cam_high", rng.integers(0, 255, (128, 128, 3), np.uint8))
            recorder.command(step * 0.08, None, np.full(14, step * 1e-3))
            if os.path.getsize({str(path)!r}) > 700_000:
                os.kill(os.getpid(), signal.SIGKILL)  # no close(): no summary, no footer
            time.sleep(0.001)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert done.returncode == -9, done.stderr.decode()
    commands, topics = [], {}
    with open(path, "rb") as handle:
        try:  # the library's streaming reader: records in file order, chunks decompressed, no summary needed
            for record in StreamReader(handle).records:
                if isinstance(record, Channel):
                    topics[record.id] = record.topic
                elif isinstance(record, Message) and topics[record.channel_id] == "/eva/command/filtered":
                    commands.append(record.log_time)
        except EndOfFile:  # the truncated tail, where the kill cut the last chunk
            pass
    assert len(commands) > 100  # at least two whole chunks of a 256 KiB chunk size
    assert commands == sorted(commands)


def test_a_full_disk_stops_the_recording_not_the_loop_and_is_counted(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")  # Linux has it; the CI machines are Linux
    recorder = EpisodeRecorder(Path("/dev/full"), TOPICS)
    for step in range(3000):  # never blocks: the queue drops what the writer cannot take
        recorder.command(step * 0.02, None, np.zeros(14))
        recorder.frame(step * 0.02, "cam_high", np.zeros((128, 128, 3), np.uint8))
    summary = recorder.close()
    assert summary.error is not None and "No space left" in summary.error
    assert summary.sha256 is None and summary.dropped > 0
    assert summary.messages + summary.dropped == 6000  # every item is either in the file or counted


def test_frames_of_the_wrong_encoding_or_size_are_refused_and_counted_never_written(tmp_path: Path) -> None:
    path = tmp_path / "refused.mcap"
    recorder = EpisodeRecorder(path, TOPICS)
    recorder.frame(0.0, "cam_high", np.zeros((128, 128, 3), np.float32))  # not 8-bit
    recorder.frame(0.0, "cam_high", np.zeros((128, 128), np.uint8))  # not RGB
    recorder.frame(0.0, "cam_high", np.zeros((96, 128, 3), np.uint8))  # not the camera's configured size
    recorder.frame(0.0, "cam_nowhere", np.zeros((128, 128, 3), np.uint8))  # no such camera
    recorder.frame(0.0, "cam_high", np.zeros((128, 128, 3), np.uint8))
    summary = recorder.close()
    assert (summary.refused, summary.messages, summary.error) == (4, 1, None)
    decoded = [m for _, _, m in decoded_messages(path)]
    assert len(decoded) == 1 and decoded[0].header.frame_id == "cam_high"


def test_a_recording_directory_that_cannot_be_written_is_refused_before_anything_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(RecordingError, match="not writable"):
        check_recording_dir(blocker / "recordings")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "eva"), "run", "--episodes", "1", "--record", str(blocker / "recordings")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--record" in done.stdout + done.stderr
    assert not (tmp_path / "artifacts").exists()
