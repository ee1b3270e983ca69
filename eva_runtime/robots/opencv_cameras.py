"""Cameras read with OpenCV (V4L2 devices, or any source `cv2.VideoCapture` opens) for a robot without ROS.

One reader thread per camera keeps only the newest frame, converted to RGB and stamped on the robot clock when it
was read, so `latest` never blocks the control loop and a camera that stops delivering shows as an old stamp (the
loop then refuses to plan from it) instead of as an error in the middle of a tick. A camera that cannot be opened
is an error at `start`, before anything moves. A video file is a recorded camera for dry runs: it plays at its own
frame rate and starts over at its end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from eva_runtime.robots.interface import CameraFrame

__all__ = ["OpenCvCameras", "parse_camera_sources"]


def parse_camera_sources(items: list[str]) -> dict[str, str | int]:
    """`name=source` pairs (a device index, a /dev path or a file) -> {name: source}; errors name the item."""
    sources: dict[str, str | int] = {}
    for item in items:
        name, separator, source = item.partition("=")
        if not separator or not name or not source:
            raise ValueError(f"camera {item!r}: expected NAME=SOURCE (e.g. cam_high=/dev/video0 or cam_high=0)")
        if name in sources:
            raise ValueError(f"camera {name!r} given twice")
        sources[name] = int(source) if source.isdigit() else source
    return sources


class OpenCvCameras:
    def __init__(self, sources: Mapping[str, str | int], clock: Callable[[], float] = time.monotonic) -> None:
        self.sources = dict(sources)
        self._clock = clock
        self._latest: dict[str, CameraFrame] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._captures: list = []

    def start(self) -> None:
        import cv2

        for name, source in self.sources.items():
            capture = cv2.VideoCapture(source)
            if not capture.isOpened():
                self.close()
                raise RuntimeError(f"camera {name!r}: cannot open {source!r}")
            self._captures.append(capture)
            thread = threading.Thread(target=self._read, args=(name, capture), name=f"camera-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, name: str, capture) -> None:
        import cv2

        recorded = isinstance(self.sources[name], str) and not self.sources[name].startswith("/dev/")
        period = 1.0 / (capture.get(cv2.CAP_PROP_FPS) or 25.0) if recorded else 0.0
        while not self._stop.is_set():
            ok, image = capture.read()
            if not ok and recorded:
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = capture.read()
            if not ok:
                return  # the device went away: the last frame ages and the loop holds
            if period:
                self._stop.wait(period)
            frame = CameraFrame(np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)), self._clock())
            with self._lock:
                self._latest[name] = frame

    def latest(self, name: str) -> CameraFrame | None:
        with self._lock:
            return self._latest.get(name)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
        for capture in self._captures:
            capture.release()
        self._threads, self._captures = [], []

    def __enter__(self) -> OpenCvCameras:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
