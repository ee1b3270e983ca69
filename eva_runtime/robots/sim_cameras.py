"""Simulated cameras on their own thread, as a real robot's are: frames arrive at the cameras' rate, stamped with
the simulation time they show, and the control loop never waits for a render.

Rendering one 64x64 view costs 5-14 ms on this project's CPU renderer (llvmpipe), longer than a 200 Hz period, so
a render inside a tick is a stall (bench/control_loop.py measured every stall over 10 ms to be one). Here the
physics thread only takes a snapshot of the state when a frame is due (:meth:`StreamingCameras.after_step`, a
copy of a few hundred numbers); a thread restores it into its own `MjData` and renders it (``SnapshotCameras``;
MuJoCo releases the GIL while it renders), and :meth:`StreamingCameras.latest` hands out the newest finished
frames. A frame is then up to one camera period plus one render old, as on hardware; the loop's frame timeout
still applies. The sim ROS node has rendered this way since it was written; this gives `eva run` the same.

A new episode (:meth:`StreamingCameras.restart`) drops every frame and snapshot of the last one and renders its
first frame before returning, so no frame of an old scene is ever delivered and the first tick has a picture.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from eva_runtime.embodiment import CameraSpec
from eva_runtime.robots.interface import CameraFrame, RobotError

__all__ = ["StreamingCameras"]

log = logging.getLogger(__name__)


class StreamingCameras:
    """Renders `cameras` of `sim` from snapshots on a thread of its own, every 1 / fps of simulation time."""

    def __init__(self, sim, cameras: Sequence[CameraSpec]) -> None:  # sim: BimanualSim
        if not cameras:
            raise ValueError("streaming cameras need at least one camera")
        self._sim = sim
        self._cameras = tuple(cameras)
        self._period = 1.0 / max(camera.fps for camera in cameras)
        self._condition = threading.Condition()
        self._pending = None  # (episode, snapshot) waiting for the thread; only the newest matters
        self._frames: dict[str, CameraFrame] = {}
        self._episode = 0  # frames and snapshots of an earlier episode are never delivered
        self._next_due = float("inf")  # no frames before the first restart()
        self._closed = False
        self.error: BaseException | None = None  # what stopped the thread, if anything did
        self._thread = threading.Thread(target=self._run, name="sim-cameras", daemon=True)
        self._thread.start()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(camera.name for camera in self._cameras)

    def restart(self, timeout_s: float = 30.0) -> None:
        """A new episode: forget the old one's frames, render this scene now and wait for it."""
        with self._condition:
            self._episode += 1
            self._frames.clear()
            self._pending = (self._episode, self._sim.snapshot())
            self._next_due = self._sim.time + self._period
            self._condition.notify_all()
            complete = lambda: len(self._frames) == len(self._cameras) or self._stopped()  # noqa: E731
            if not self._condition.wait_for(complete, timeout_s):
                raise RobotError(f"the simulated cameras rendered no frame in {timeout_s} s")
            if self.error is not None:
                raise RobotError(f"the simulated cameras stopped: {self.error}") from self.error

    def after_step(self, now: float) -> None:
        """Called by the physics thread after each step: hand a snapshot to the thread when a frame is due."""
        if now + 1e-9 < self._next_due:
            return
        self._next_due += self._period * (int((now - self._next_due) / self._period) + 1)  # the next grid time
        snapshot = self._sim.snapshot()
        with self._condition:
            self._pending = (self._episode, snapshot)  # a render still running misses this one: like a camera
            self._condition.notify_all()

    def latest(self, names: Sequence[str]) -> dict[str, CameraFrame]:
        """The newest finished frame of each named camera (none yet: absent, which the loop counts as stale)."""
        with self._condition:
            return {name: self._frames[name] for name in names if name in self._frames}

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(timeout=5.0)

    def _stopped(self) -> bool:
        return self._closed or self.error is not None

    def _run(self) -> None:
        renderers = {}  # made on this thread: a GL context belongs to the thread that renders
        try:
            while True:
                with self._condition:
                    self._condition.wait_for(lambda: self._pending is not None or self._closed)
                    if self._closed:
                        return
                    (episode, snapshot), self._pending = self._pending, None
                frames = {}
                for camera in self._cameras:
                    size = (camera.height, camera.width)
                    if size not in renderers:
                        renderers[size] = self._sim.snapshot_cameras(*size)
                    image = renderers[size].render(snapshot, (camera.name,))[camera.name]
                    frames[camera.name] = CameraFrame(image, snapshot.time)
                with self._condition:
                    if episode == self._episode:
                        self._frames.update(frames)
                        self._condition.notify_all()
        except Exception as error:  # frames stop coming: the loop's frame timeout makes the robot hold
            log.error("simulated cameras stopped: %s", error)
            with self._condition:
                self.error = error
                self._condition.notify_all()
        finally:
            for renderer in renderers.values():
                renderer.close()
