"""Shared pieces of the world-model serving tests: observations and requests, a server on a free localhost port,
and plain HTTP GET against it."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from eva_runtime.world_model.protocol import RolloutRequest
from eva_runtime.world_model.serving.server import WorldModelServer
from tests.conftest import CALIBRATION
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
