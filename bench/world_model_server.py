"""Benchmark: world-model server round trip vs the same rollout in-process, and the pure transport overhead.

Two parts, each timing the same `RolloutRequest` three ways in one run: called in-process on the world model, and
through a `WorldModelServer` (serving from a thread on 127.0.0.1) with a `RemoteWorldModel` client, once without
a token and once with one (the token is checked once per connection, at the handshake, so calls should not differ;
the connection time, hello included, is timed too).
- The tiny Wan model (as `bench/world_model.py` builds it, or `--model DIR`) at a few (steps, G) cells: the
  overhead a remote planner pays on top of generation, in ms and as the ratio remote / in-process.
- A trivial world model that returns the observed frame repeated (a broadcast view: zero compute, no copy) at
  64x64 and 480x640 and G = 1 and 8, horizon 17: the round trip is then all transport (validation, msgpack
  encoding of the frames, websockets over loopback, decoding and copying on the client), with its MB/s, and the
  reply's msgpack encode (server) and decode (client) timed on their own to show how much of it they are.

Calls run in rounds (each way once per round; the trivial model's cases one after another) so a shared machine's
slow spells hit all ways alike. Median milliseconds per call, wall clock and CPU time (`*_cpu_ms`): the server
runs in this process, so its CPU time is the whole cost of a call (client, server thread and loopback sockets
together) and is less disturbed by other processes' load. The Wan rows' overhead is a difference of two
generations' times, so on a busy machine it is within their noise: the trivial model's rows are the transport
cost to read. Prints one JSON document.

    .venv/bin/python bench/world_model_server.py --threads 1 [--model DIR] [--cells 1:1,10:1,10:8] [--repeats 5]
        [--transport-repeats 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from world_model import (
    HORIZON,
    build_world_model,
    interleaved_times,
    load_average,
    machine,
    median,
    rollout_request,
    with_steps,
)

from eva_runtime.world_model.protocol import Rollout, RolloutRequest, WorldModel
from eva_runtime.world_model.serving.client import RemoteWorldModel
from eva_runtime.world_model.serving.messages import MAX_REPLY_BYTES, RolloutReply, decode, encode
from eva_runtime.world_model.serving.server import WorldModelServer

TOKEN = "benchmark-token"
SIZES = ((64, 64), (480, 640))
CLIENT_TIMEOUT_S = 600.0  # a loaded CPU may be slow; a benchmark must not give up on a call


class RepeatWorldModel:
    """Zero-compute world model: every rollout is the newest observed frame repeated (a read-only view)."""

    model_id = "repeat-frame"
    fps = 12.5
    cameras = ("cam_high",)

    def rollout(self, request: RolloutRequest) -> Rollout:
        began = time.perf_counter()
        frames: dict[str, np.ndarray] = {}
        for camera in self.cameras:
            newest = request.frames[camera][-1]
            frames[camera] = np.broadcast_to(newest, (request.samples, request.horizon, *newest.shape))
        return Rollout(frames, self.fps, time.perf_counter() - began, self.model_id)


@contextmanager
def served(world_model: WorldModel, token: str | None) -> Iterator[RemoteWorldModel]:
    """A server for `world_model` on a free loopback port and a client connected to it."""
    with ExitStack() as stack:
        port, shutdown = WorldModelServer(world_model, host="127.0.0.1", port=0, token=token).run_in_thread()
        stack.callback(shutdown)
        client = stack.enter_context(
            RemoteWorldModel(f"ws://127.0.0.1:{port}", token=token, timeout_s=CLIENT_TIMEOUT_S)
        )
        yield client


def compare(
    world_model: WorldModel, requests: dict[Hashable, RolloutRequest], repeats: int
) -> dict[Hashable, tuple[float, float]]:
    """Median (wall, CPU) seconds per call for each request: in-process, served without a token, served with one."""
    with served(world_model, None) as plain, served(world_model, TOKEN) as tokened:
        calls: dict[Hashable, Callable[[], object]] = {}
        for key, request in requests.items():
            calls[(key, "in_process")] = lambda r=request: world_model.rollout(r)
            calls[(key, "server")] = lambda r=request: plain.rollout(r)
            calls[(key, "server_token")] = lambda r=request: tokened.rollout(r)
        times = interleaved_times(calls, repeats)
    return {key: (median(measured.wall), median(measured.cpu)) for key, measured in times.items()}


def connect_ms(repeats: int) -> dict[str, float]:
    """Median milliseconds to open a connection and read the hello, without and with a token."""
    results = {}
    world_model = RepeatWorldModel()
    for name, token in (("no_token", None), ("token", TOKEN)):
        port, shutdown = WorldModelServer(world_model, port=0, token=token).run_in_thread()
        try:
            url = f"ws://127.0.0.1:{port}"
            times = interleaved_times({name: lambda u=url, t=token: RemoteWorldModel(u, token=t).close()}, repeats)
        finally:
            shutdown()
        results[name] = round(median(times[name].wall) * 1e3, 2)
    return results


def row(seconds: dict[Hashable, tuple[float, float]], key: Hashable) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    for index, clock in enumerate(("", "cpu_")):
        local, remote, tokened = (seconds[(key, way)][index] for way in ("in_process", "server", "server_token"))
        result.update(
            {
                f"in_process_{clock}ms": round(local * 1e3, 3),
                f"server_{clock}ms": round(remote * 1e3, 2),
                f"server_token_{clock}ms": round(tokened * 1e3, 2),
                f"overhead_{clock}ms": round((remote - local) * 1e3, 2),
                f"overhead_token_{clock}ms": round((tokened - local) * 1e3, 2),
                f"{clock}ratio": round(remote / local, 3) if local > 0 else None,
                f"{clock}ratio_token": round(tokened / local, 3) if local > 0 else None,
            }
        )
    return result


def wan_part(
    model_dir: Path | None, threads: int, cells: list[tuple[int, int]], horizon: int, repeats: int
) -> tuple[str, list[dict[str, Any]]]:
    model, source = build_world_model(model_dir, threads)
    results = []
    for steps in sorted({steps for steps, _ in cells}):
        stepped = with_steps(model, steps)
        requests = {samples: rollout_request(stepped, samples, horizon) for s, samples in cells if s == steps}
        seconds = compare(stepped, requests, repeats)
        for samples, request in requests.items():
            reply_mb = samples * horizon * int(np.prod(request.frames[stepped.settings.camera].shape[1:])) / 1e6
            results.append(
                {"steps": steps, "samples": samples, "reply_mb": round(reply_mb, 3), **row(seconds, samples)}
            )
    return source, results


def reply_codec_ms(world_model: WorldModel, request: RolloutRequest, repeats: int) -> dict[str, float]:
    """Median ms to msgpack-encode the reply (server side) and to decode it (client side), on their own."""
    rollout = world_model.rollout(request)
    reply = RolloutReply(1, rollout.frames, rollout.fps, rollout.model_id, rollout.seconds, 0.0)
    data = encode(reply, MAX_REPLY_BYTES)
    times = interleaved_times(
        {"encode": lambda: encode(reply, MAX_REPLY_BYTES), "decode": lambda: decode(data, MAX_REPLY_BYTES)}, repeats
    )
    return {f"reply_{key}_ms": round(median(measured.wall) * 1e3, 2) for key, measured in times.items()}


def transport_part(horizon: int, samples_grid: list[int], repeats: int) -> list[dict[str, Any]]:
    world_model = RepeatWorldModel()
    rng = np.random.default_rng(0)
    results = []
    for height, width in SIZES:
        frame = rng.integers(0, 256, size=(1, height, width, 3), dtype=np.uint8)
        for samples in samples_grid:
            request = RolloutRequest({"cam_high": frame}, "transport", horizon, 0, samples)
            # One case at a time, its three ways interleaved: a small call timed right after a 125 MB reply took
            # tens of times longer than on its own, which is not the small call's cost.
            measured = row(compare(world_model, {"case": request}, repeats), "case")
            codec = reply_codec_ms(world_model, request, repeats)
            overhead = measured["overhead_ms"] or 0.0
            request_mb = frame.nbytes / 1e6
            reply_mb = samples * horizon * height * width * 3 / 1e6
            results.append(
                {
                    "image_size": [height, width],
                    "samples": samples,
                    "request_mb": round(request_mb, 3),
                    "reply_mb": round(reply_mb, 3),
                    **measured,
                    "mb_per_s": round((request_mb + reply_mb) * 1e3 / overhead, 1) if overhead > 0 else None,
                    **codec,
                    # What is left of the overhead: the request's codec, websockets framing, loopback sockets.
                    "rest_ms": round(overhead - codec["reply_encode_ms"] - codec["reply_decode_ms"], 2),
                }
            )
    return results


def cell(text: str) -> tuple[int, int]:
    steps, samples = text.split(":")
    return int(steps), int(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="A model directory (default: built from config).")
    parser.add_argument(
        "--cells", type=lambda text: [cell(part) for part in text.split(",")], default=[(1, 1), (10, 1), (10, 8)]
    )
    parser.add_argument("--horizon", type=int, default=HORIZON)
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per way for the Wan model.")
    parser.add_argument("--transport-repeats", type=int, default=10, help="Timed calls per way, trivial model.")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: cell 1:1, horizon 5, 1 repeat.")
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.horizon, args.repeats, args.transport_repeats = [(1, 1)], 5, 1, 1
    torch.set_num_threads(args.threads)
    began, load_before = time.perf_counter(), load_average()
    source, wan = wan_part(args.model, args.threads, args.cells, args.horizon, args.repeats)
    transport = transport_part(args.horizon, [1, 8], args.transport_repeats)
    report = {
        "benchmark": "wan_world_model_server_round_trip",
        "model": source,
        "horizon": args.horizon,
        "repeats": args.repeats,
        "transport_repeats": args.transport_repeats,
        "wan": wan,
        "transport": transport,
        "connect_ms": connect_ms(args.transport_repeats),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "bench_seconds": round(time.perf_counter() - began, 1),
        **machine(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
