"""World-model serving: a real server and client over localhost websockets.

Round trip (exact frames, hello, timing), token authentication, `/healthz` over plain HTTP while a generation
runs, the size limit, malformed messages, a server killed (SIGKILL) and restarted under a connected client, the
planner process holding with "world model unavailable" when its server is gone, the CLI's refusal to serve the
oracle, and the message schema (field validation, and an encode/decode property test).

The served model is :class:`ShiftingWorldModel`, defined here: a small deterministic WorldModel whose frames are
computed from the request (shifted copies of the newest frame plus seeded noise), so every byte is checkable.
It is a legitimate instrument: the thing under test is the transport, not the model.
"""

from __future__ import annotations

import http.client
import inspect
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from typer.testing import CliRunner
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from eva_runtime.bundle import create_bundle, load_bundle
from eva_runtime.cli import app
from eva_runtime.cli.serve import world_model_spec
from eva_runtime.control.planner import PlanRequest
from eva_runtime.control.planner_process import PlannerProcess
from eva_runtime.wire import pack
from eva_runtime.world_model import factory
from eva_runtime.world_model.protocol import RolloutRequest
from eva_runtime.world_model.serving.client import RemoteRollout, RemoteWorldModel, WorldModelUnavailable
from eva_runtime.world_model.serving.messages import (
    MAX_SAMPLES,
    PROTOCOL_VERSION,
    ErrorCode,
    ErrorReply,
    Hello,
    MessageError,
    RolloutCall,
    RolloutReply,
    decode,
    encode,
)
from eva_runtime.world_model.serving.server import HEALTH_PATH, WorldModelServer
from tests.conftest import CALIBRATION, REPO
from tests.fakes import ShiftingWorldModel

ALOHA = CALIBRATION / "aloha_sim.yaml"
CAMERAS = ("cam_high", "cam_left_wrist")
TOKEN = "correct horse battery staple"


def observation(cameras: tuple[str, ...] = CAMERAS, size: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {camera: rng.integers(0, 248, (2, size, size, 3), np.uint8) for camera in cameras}


def request(samples: int = 2, horizon: int = 5, seed: int = 7, **kwargs: object) -> RolloutRequest:
    fields = {"frames": observation(), "instruction": "pick up the cube", "horizon": horizon, "seed": seed}
    return RolloutRequest(**{**fields, "samples": samples, **kwargs})


@contextmanager
def served(model: object | None = None, **options: object) -> Iterator[str]:
    """A server on a free localhost port for the duration of the block; yields its ws:// url."""
    server = WorldModelServer(model or ShiftingWorldModel(), port=0, **options)
    port, stop = server.run_in_thread()
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        stop()


def http_get(url: str, path: str) -> tuple[int, str, bytes]:
    host, port = url.removeprefix("ws://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


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


# A server that dies and comes back ----------------------------------------------------------------------------

# The subprocess gets the model's own source rather than importing this module, which would pull in torch (through
# the IDM fixture) and make each start take seconds.
SERVER_SCRIPT = f"""
import asyncio, sys, threading
import numpy as np
from eva_runtime.world_model.protocol import Rollout, RolloutRequest
from eva_runtime.world_model.serving.server import WorldModelServer
CAMERAS = {CAMERAS!r}
{inspect.getsource(ShiftingWorldModel)}
server = WorldModelServer(ShiftingWorldModel(), port=int(sys.argv[1]))
asyncio.run(server.serve_forever(ready=lambda port: print(port, flush=True)))
"""


def start_server_process(port: int = 0) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = process.stdout.readline()  # the port, once listening (empty if the process died first)
    if not line:
        process.kill()
        raise RuntimeError("the server process did not start")
    return process, int(line)


def test_a_killed_server_makes_the_call_fail_and_a_restarted_one_is_reconnected() -> None:
    process, port = start_server_process()
    try:
        remote = RemoteWorldModel(f"ws://127.0.0.1:{port}", timeout_s=3)
        assert remote.rollout(request()).model_id == "shifting:test"
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        with pytest.raises(WorldModelUnavailable, match=r"cannot reach|lost"):
            remote.rollout(request())
        process, _ = start_server_process(port)  # same port: the client's url is unchanged
        rollout = remote.rollout(request(seed=3))
        np.testing.assert_array_equal(
            rollout.frames["cam_high"], ShiftingWorldModel().rollout(request(seed=3)).frames["cam_high"]
        )
        remote.close()
    finally:
        process.kill()
        process.wait(5)


def test_an_unreachable_server_is_unavailable_at_construction() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago; nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WorldModelUnavailable, match="cannot reach"):
        RemoteWorldModel(f"ws://127.0.0.1:{port}", timeout_s=1)
    with pytest.raises(ValueError, match="ws://"):
        RemoteWorldModel("http://127.0.0.1:1")


# The planner process holds when its world model is gone ------------------------------------------------------


def test_the_planner_process_rejects_with_world_model_unavailable_when_the_server_is_gone(idm_onnx: Path) -> None:
    model = ShiftingWorldModel(cameras=("cam_high",))  # the IDM fixture's camera, at its 12.5 fps
    server = WorldModelServer(model, port=0)
    port, stop = server.run_in_thread()
    spec = {
        "idm": str(idm_onnx),
        "embodiment": str(ALOHA),
        "world_model": {"kind": "remote", "url": f"ws://127.0.0.1:{port}", "timeout_s": 2.0},
        "settings": {"horizon": 5, "attempts": 1, "threshold": -1e12},
    }
    planner = PlannerProcess(spec)
    try:
        planner.start(wait_s=60)
        assert planner.model_id == "shifting:test"
        plan_request = PlanRequest(0.0, observation(("cam_high",), size=32), "pick up the cube", seed=1)

        def answer(request_id: int):
            assert planner.submit(request_id, plan_request)
            for _ in range(3000):
                if (outcome := planner.poll()) is not None:
                    return outcome
                time.sleep(0.01)
            raise AssertionError("the planner process did not answer")

        request_id, outcome = answer(1)
        assert request_id == 1 and outcome.plan is not None  # served: a plan (the threshold accepts any)
        stop()
        request_id, outcome = answer(2)
        assert request_id == 2 and outcome.plan is None
        assert outcome.reason.startswith("world model unavailable"), outcome.reason
        assert planner.alive  # it keeps serving: the next request is answered too
        assert answer(3)[1].reason.startswith("world model unavailable")
    finally:
        planner.kill()
        stop()


# The command line ---------------------------------------------------------------------------------------------


def test_serve_refuses_the_oracle_and_a_broken_bundle(idm_onnx: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    create_bundle(bundle, idm_onnx, ALOHA, {"kind": "oracle", "id": "oracle", "horizon": 9}, {"p0": 2000.0})
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "world-model", "--bundle", str(bundle)])
    assert result.exit_code == 2 and "privileged simulator state" in result.output, result.output
    result = runner.invoke(app, ["serve", "world-model", "--bundle", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "manifest.yaml" in result.output, result.output


def test_serving_a_bundle_resolves_its_adapters_and_publishes_its_hashes(
    idm_onnx: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter = tmp_path / "style.safetensors"
    adapter.write_bytes(b"lora weights")
    bundle = tmp_path / "bundle"
    section = {"kind": "wan", "id": "wan:test", "horizon": 9, "base": "../wan_base", "adapters": ["style"]}
    section["sampling"] = {"steps": 4, "camera": "cam_high"}
    create_bundle(bundle, idm_onnx, ALOHA, section, {"p0": 2000.0}, extra_files={"style": adapter})
    deployed = load_bundle(bundle)
    spec = world_model_spec(deployed)
    assert (spec["kind"], spec["model_id"], spec["fps"]) == ("wan", "wan:test", deployed.manifest.idm.fps)
    assert spec["threads"] is None and spec["base_sha256"] is None
    assert spec["base"] == str(tmp_path.resolve() / "wan_base") and (spec["steps"], spec["camera"]) == (4, "cam_high")
    assert spec["adapters"] == [{"name": "style", "path": str(bundle.resolve() / "style.safetensors"), "weight": 1.0}]

    # The command's wiring, with the test model in place of Wan and the server captured instead of run forever.
    built, started = [], []
    monkeypatch.setattr(factory, "build_world_model", lambda spec, **k: built.append((spec, k)) or ShiftingWorldModel())
    monkeypatch.setattr(WorldModelServer, "run", lambda server: started.append(server))
    monkeypatch.setenv("TEST_WM_TOKEN", TOKEN)
    arguments = ["serve", "world-model", "--bundle", str(bundle), "--port", "0", "--token-env", "TEST_WM_TOKEN"]
    result = CliRunner().invoke(app, [*arguments, "--max-message-mb", "2"])
    assert result.exit_code == 0, result.output
    assert built[0][0] == spec and built[0][1]["cameras"] == deployed.manifest.idm.cameras
    (server,) = started
    assert (server.host, server.token, server.max_message_bytes) == ("127.0.0.1", TOKEN, 2 * 1024 * 1024)
    hello = decode(server.hello)
    bundle_metadata = {"manifest_sha256": deployed.manifest_sha256, "files": deployed.hashes(), "base_sha256": None}
    assert hello.metadata["bundle"] == bundle_metadata
    assert hello.metadata["horizon"] == 9 and hello.metadata["world_model_id"] == "wan:test"


# The message schema -------------------------------------------------------------------------------------------

frames_5d = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=5, max_dims=5, max_side=4).map(lambda s: (*s[:4], 3)))
frames_4d = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=4, max_dims=4, max_side=5).map(lambda s: (*s[:3], 3)))
camera_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


@given(
    frames=st.dictionaries(camera_names, frames_4d, min_size=1, max_size=3),
    instruction=st.text(max_size=40),
    call_id=st.integers(0, 2**63 - 1),
    seed=st.integers(0, 2**64 - 1),
    horizon=st.integers(1, 64),
    samples=st.integers(1, MAX_SAMPLES),
)
def test_rollout_calls_survive_encode_and_decode(frames, instruction, call_id, seed, horizon, samples) -> None:
    call = RolloutCall(call_id, RolloutRequest(frames, instruction, horizon, seed, samples))
    decoded = decode(encode(call))
    assert isinstance(decoded, RolloutCall) and decoded.id == call_id
    got = decoded.request
    assert (got.instruction, got.horizon, got.seed, got.samples) == (instruction, horizon, seed, samples)
    assert got.privileged_state is None and got.frames.keys() == frames.keys()
    for camera, array in frames.items():
        assert got.frames[camera].dtype == np.uint8
        np.testing.assert_array_equal(got.frames[camera], array)


@given(
    frames=st.dictionaries(camera_names, frames_5d, min_size=1, max_size=3),
    fps=st.floats(1e-3, 1e3),
    generation_s=st.floats(0, 1e4),
    queue_s=st.floats(0, 1e4),
)
def test_rollout_replies_survive_encode_and_decode(frames, fps, generation_s, queue_s) -> None:
    decoded = decode(encode(RolloutReply(3, frames, fps, "model", generation_s, queue_s)))
    assert isinstance(decoded, RolloutReply)
    assert (decoded.id, decoded.fps, decoded.generation_s, decoded.queue_s) == (3, fps, generation_s, queue_s)
    for camera, array in frames.items():
        np.testing.assert_array_equal(decoded.frames[camera], array)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"fps": float("nan")}, "rollout_result.fps"),
        ({"fps": 0.0}, "rollout_result.fps"),
        ({"queue_s": -1.0}, "rollout_result.queue_s"),
        ({"model_id": ""}, "rollout_result.model_id"),
        ({"frames": {"c": np.zeros((1, 2, 4, 4), np.uint8)}}, "rollout_result.frames[c]"),
        ({"frames": {"c": np.zeros((1, 2, 4, 4, 3), np.int64)}}, "rollout_result.frames[c]"),
        ({"frames": {}}, "rollout_result.frames"),
        ({"id": -1}, "rollout_result.id"),
    ],
)
def test_reply_fields_are_validated_and_named(message: dict, field: str) -> None:
    body = {
        "type": "rollout_result",
        "version": PROTOCOL_VERSION,
        "id": 1,
        "frames": {"c": np.zeros((1, 2, 4, 4, 3), np.uint8)},
        "fps": 12.5,
        "model_id": "m",
        "generation_s": 0.1,
        "queue_s": 0.0,
    }
    with pytest.raises(MessageError) as error:
        decode(pack({**body, **message}))
    assert error.value.code == ErrorCode.BAD_REQUEST and str(error.value).startswith(field)


def test_hello_and_error_round_trip() -> None:
    hello = Hello("wan:lora", 12.5, ("cam_high",), 1024, {"horizon": 37, "bundle": {"idm": "00" * 32}})
    assert decode(encode(hello)) == hello
    error = ErrorReply(None, "bad_message", "not msgpack")
    assert decode(encode(error)) == error
