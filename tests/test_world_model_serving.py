"""World-model serving: a real server and client over localhost websockets.

Round trip (exact frames, hello, timing), token authentication, `/healthz` over plain HTTP while a generation
runs, deadlines, the size limit and malformed messages. Server processes, the planner and the CLI, and the message
schema are in tests/test_world_model_server_process.py.

The served model is :class:`ShiftingWorldModel`, defined here: a small deterministic WorldModel whose frames are
computed from the request (shifted copies of the newest frame plus seeded noise), so every byte is checkable.
It is a legitimate instrument: the thing under test is the transport, not the model.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from eva_runtime.wire import pack
from eva_runtime.world_model.serving.client import RemoteRollout, RemoteWorldModel, WorldModelUnavailable
from eva_runtime.world_model.serving.messages import (
    MAX_SAMPLES,
    PROTOCOL_VERSION,
    ErrorCode,
    ErrorReply,
    Hello,
    RolloutReply,
    decode,
    encode,
)
from eva_runtime.world_model.serving.server import HEALTH_PATH, WorldModelServer
from tests.fakes import ShiftingWorldModel
from tests.serving_helpers import CAMERAS, TOKEN, http_get, observation, request, served

# Round trip ---------------------------------------------------------------------------------------------------


def test_round_trip_returns_the_models_exact_frames_with_hello_and_timing() -> None:
    model = ShiftingWorldModel()
    metadata = {"horizon": 5, "image_size": [16, 16], "bundle": {"idm": "ab" * 32}}
    with served(model, metadata=metadata) as url, RemoteWorldModel(url, timeout_s=5) as remote:
        assert (remote.model_id, remote.fps, remote.cameras) == (model.model_id, model.fps, model.cameras)
        assert remote.metadata == metadata
        call = request(samples=3, horizon=6, privileged_state=object())  # never sent: not even encodable
        rollout = remote.rollout(call)
    expected = model.rollout(call)
    assert isinstance(rollout, RemoteRollout)
    assert rollout.model_id == model.model_id and rollout.fps == model.fps
    for camera in CAMERAS:
        assert rollout.frames[camera].dtype == np.uint8
        assert rollout.frames[camera].shape == (3, 6, 16, 16, 3)
        np.testing.assert_array_equal(rollout.frames[camera], expected.frames[camera])
    assert rollout.seconds >= 0 and rollout.queue_s >= 0 and rollout.round_trip_s >= rollout.seconds


def test_only_the_models_cameras_are_sent_and_a_missing_one_is_refused_locally() -> None:
    with served(ShiftingWorldModel(cameras=("cam_high",))) as url, RemoteWorldModel(url, timeout_s=5) as remote:
        assert remote.rollout(request()).frames.keys() == {"cam_high"}  # cam_left_wrist stayed here
    with served() as url, RemoteWorldModel(url, timeout_s=5) as remote, pytest.raises(ValueError, match="cam_left"):
        remote.rollout(request(frames=observation(("cam_high",))))


def test_a_failing_model_is_an_error_reply_and_the_connection_keeps_serving() -> None:
    with served() as url, RemoteWorldModel(url, timeout_s=5) as remote:
        with pytest.raises(WorldModelUnavailable, match=r"generation_failed.*out of memory"):
            remote.rollout(request(instruction="fail"))
        with pytest.raises(WorldModelUnavailable, match=r"generation_failed.*unusable frames"):
            remote.rollout(request(instruction="bad shape"))
        assert remote.rollout(request()).frames["cam_high"].shape[:2] == (2, 5)


# Authentication and health ------------------------------------------------------------------------------------


def test_the_right_token_connects_and_a_wrong_or_missing_one_is_refused() -> None:
    with served(token=TOKEN) as url:
        with RemoteWorldModel(url, token=TOKEN, timeout_s=5) as remote:
            assert remote.rollout(request()).frames["cam_high"].shape == (2, 5, 16, 16, 3)
        with pytest.raises(WorldModelUnavailable, match=r"authentication failed.*token was refused.*401"):
            RemoteWorldModel(url, token="guess", timeout_s=5)
        with pytest.raises(WorldModelUnavailable, match=r"authentication failed.*no token.*401"):
            RemoteWorldModel(url, timeout_s=5)


def test_healthz_answers_plain_http_without_a_token_even_while_a_generation_runs() -> None:
    gate = threading.Event()
    with served(ShiftingWorldModel(gate=gate), token=TOKEN) as url:
        status, content_type, body = http_get(url, HEALTH_PATH)
        assert status == 200 and content_type == "application/json"
        state = json.loads(body)
        assert (state["status"], state["busy"], state["requests"]) == ("ok", False, 0)
        remote = RemoteWorldModel(url, token=TOKEN, timeout_s=10)
        result: list[object] = []
        worker = threading.Thread(target=lambda: result.append(remote.rollout(request())))
        worker.start()
        try:
            for _ in range(200):  # the generation starts when the call arrives; wait for that, then ask
                state = json.loads(http_get(url, HEALTH_PATH)[2])
                if state["busy"]:
                    break
                time.sleep(0.01)
            assert state["busy"] is True  # answered while the model is still generating
        finally:
            gate.set()
            worker.join(10)
        assert isinstance(result[0], RemoteRollout)
        assert json.loads(http_get(url, HEALTH_PATH)[2])["requests"] == 1
        assert http_get(url, "/")[0] == 401  # anything else needs the token, HTTP included
        remote.close()


def test_binding_beyond_loopback_without_a_token_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="eva_runtime.world_model.serving"):
        server = WorldModelServer(ShiftingWorldModel(), host="0.0.0.0", port=0)
        _, stop = server.run_in_thread()
        stop()
    assert any("WITHOUT a token" in record.getMessage() for record in caplog.records)
    with pytest.raises(ValueError, match="empty token"):
        WorldModelServer(ShiftingWorldModel(), token="")


def test_calls_past_their_deadline_raise_and_a_queued_one_is_not_generated_for_nobody() -> None:
    gate = threading.Event()
    model = ShiftingWorldModel(gate=gate)
    with (
        served(model) as url,
        RemoteWorldModel(url, timeout_s=0.3) as first,
        RemoteWorldModel(url, timeout_s=0.3) as second,
    ):
        with pytest.raises(WorldModelUnavailable, match="no reply"):
            first.rollout(request(seed=1))  # generating, held by the gate
        with pytest.raises(WorldModelUnavailable, match="no reply"):
            second.rollout(request(seed=2))  # queued behind it; its caller gives up and disconnects
        gate.set()
        first.timeout_s = 10.0
        later = first.rollout(request(seed=3))  # a fresh connection, and this call's own reply
    assert model.calls == 2  # seeds 1 and 3: the queued call was dropped with its caller
    expected = ShiftingWorldModel().rollout(request(seed=3))
    np.testing.assert_array_equal(later.frames["cam_high"], expected.frames["cam_high"])


# Size limit and malformed messages ----------------------------------------------------------------------------


def test_an_oversized_call_is_refused_clearly_and_the_server_keeps_serving() -> None:
    limit = 8 * 1024
    with served(max_message_bytes=limit) as url:
        with RemoteWorldModel(url, timeout_s=5) as remote:
            assert remote.max_message_bytes == limit
            with pytest.raises(WorldModelUnavailable, match=r"too large.*max-message-mb"):
                remote.rollout(request(frames=observation(size=64)))  # 2 cameras x 2 x 64 x 64 x 3 bytes
        # A client that ignores the announced limit: the server closes that connection with 1009.
        with connect(url, compression=None, max_size=None) as raw:
            decode(raw.recv(timeout=5))
            raw.send(b"\x00" * (limit + 1))
            with pytest.raises(ConnectionClosedError) as closed:
                raw.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        with RemoteWorldModel(url, timeout_s=5) as remote:  # and keeps serving well-behaved clients
            assert remote.rollout(request()).frames["cam_high"].shape == (2, 5, 16, 16, 3)


def wire_call(**fields: object) -> bytes:
    body = {
        "type": "rollout",
        "version": PROTOCOL_VERSION,
        "id": 7,
        "frames": observation(),
        "instruction": "x",
        "horizon": 3,
        "seed": 1,
        "samples": 1,
    }
    body.update(fields)
    return pack({key: value for key, value in body.items() if value is not ...})


def test_malformed_messages_get_error_replies_on_a_connection_that_survives() -> None:
    cases = [
        (b"\xc1 is never valid msgpack", ErrorCode.BAD_MESSAGE, "not a valid message", None),
        ("a text frame", ErrorCode.BAD_MESSAGE, "text frame", None),
        (msgpack.packb([1, 2, 3]), ErrorCode.BAD_MESSAGE, "expected a msgpack map", None),
        (wire_call(version=99), ErrorCode.UNSUPPORTED_VERSION, "version 99", 7),
        (wire_call(type="teleport"), ErrorCode.BAD_MESSAGE, "unknown message type 'teleport'", 7),
        (wire_call(seed=...), ErrorCode.BAD_REQUEST, r"missing field\(s\) \['seed'\]", 7),
        (wire_call(colour="red"), ErrorCode.BAD_REQUEST, r"unknown field\(s\) \['colour'\]", 7),
        (wire_call(horizon="ten"), ErrorCode.BAD_REQUEST, "rollout.horizon: expected an integer", 7),
        (wire_call(seed=True), ErrorCode.BAD_REQUEST, "rollout.seed: expected an integer, got bool", 7),
        (wire_call(samples=MAX_SAMPLES + 1), ErrorCode.BAD_REQUEST, "rollout.samples: 65 is outside", 7),
        (wire_call(frames={"cam_high": np.zeros((2, 4, 4, 3), np.float32)}), ErrorCode.BAD_REQUEST, "uint8", 7),
        (wire_call(frames={"cam_high": np.zeros((2, 4, 4, 3), np.uint8)}), ErrorCode.BAD_REQUEST, "cam_left_wrist", 7),
        (encode(Hello("m", 1.0, ("c",), 10)), ErrorCode.BAD_MESSAGE, "not Hello", None),
    ]
    with served() as url, connect(url, compression=None) as raw:
        assert isinstance(decode(raw.recv(timeout=5)), Hello)
        for data, code, text, call_id in cases:
            raw.send(data)
            reply = decode(raw.recv(timeout=5))
            assert isinstance(reply, ErrorReply), data
            assert (reply.code, reply.id) == (code, call_id), reply
            assert re.search(text, reply.message), reply.message
        raw.send(wire_call())  # after all that, the same connection still serves
        reply = decode(raw.recv(timeout=5))
        assert isinstance(reply, RolloutReply) and reply.id == 7 and reply.frames["cam_high"].shape == (1, 3, 16, 16, 3)
