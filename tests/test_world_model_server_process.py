"""World-model serving across processes and the message schema: a server killed (SIGKILL) and restarted under a
connected client, an unreachable server, the planner process holding with "world model unavailable" when its
server is gone, the CLI's refusal to serve the oracle and a broken bundle, a bundle served with its hashes, and
the messages (field validation, encode/decode property tests)."""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from typer.testing import CliRunner

from eva_runtime.bundle import create_bundle, load_bundle
from eva_runtime.cli import app
from eva_runtime.cli.serve import world_model_spec
from eva_runtime.control.planner import PlanRequest
from eva_runtime.control.planner_process import PlannerProcess
from eva_runtime.wire import pack
from eva_runtime.world_model import factory
from eva_runtime.world_model.protocol import RolloutRequest
from eva_runtime.world_model.serving.client import RemoteWorldModel, WorldModelUnavailable
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
from eva_runtime.world_model.serving.server import WorldModelServer
from tests.conftest import REPO
from tests.fakes import ShiftingWorldModel
from tests.serving_helpers import ALOHA, CAMERAS, TOKEN, observation, request

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
        "settings": {"horizon": 5, "attempts": 1, "threshold": -1e12, "keep_imagined": True},
    }
    planner = PlannerProcess(spec)
    try:
        planner.start(wait_s=60)
        assert planner.model_id == "shifting:test"
        # Committed frames cross to the planner process and the kept rollout's frames come back (msgpack, no pickle).
        committed = {"cam_high": observation(("cam_high",), size=32, seed=1)["cam_high"]}  # 2 frames
        observed = observation(("cam_high",), size=32)
        plan_request = PlanRequest(0.0, observed, "pick up the cube", seed=1, committed=committed)

        def answer(request_id: int):
            assert planner.submit(request_id, plan_request)
            for _ in range(3000):
                if (outcome := planner.poll()) is not None:
                    return outcome
                time.sleep(0.01)
            raise AssertionError("the planner process did not answer")

        request_id, outcome = answer(1)
        assert request_id == 1 and outcome.plan is not None  # served: a plan (the threshold accepts any)
        assert outcome.plan.start_time == pytest.approx(2 / outcome.plan.fps)  # after the 2 committed frames
        imagined = outcome.plan.metadata["imagined"]["cam_high"]
        # The shifting model's frame 0 is its newest input frame, here the last committed one (plus noise < 8).
        assert imagined.shape == (5, 32, 32, 3)
        difference = imagined[0].astype(int) - committed["cam_high"][-1]
        assert np.all((difference >= 0) & (difference < 8))
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
