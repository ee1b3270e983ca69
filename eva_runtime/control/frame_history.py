"""The observed frames a world model conditions on: the newest frame and the ones before it at the model's fps.

A model trained with `history_frames` K > 1 (clean latents of the last K observed frames, docs/world_model.md)
reads motion from them: where the arm is going, not only where it is. The loop observes the cameras only when it
asks for a plan, so without this buffer every request carried one frame, which the model pads by repeating it:
a still arm, which in training is the first instant of an episode. `FrameHistory` keeps a frame every 1/fps
seconds (the loop calls :meth:`keep` every tick; it observes the cameras only when one is due) and builds each
request's K frames from them: the newest observation last, before it the kept frames nearest to 1/fps, 2/fps, ...
earlier. A frame kept more than half a period away from its slot (a gap, a hold without cameras, a new episode)
is not used; the oldest usable frame is repeated instead, as the model does for a fresh episode.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from eva_runtime.robots.interface import CameraFrame, RobotInterface

__all__ = ["FrameHistory"]


class FrameHistory:
    def __init__(self, frames: int, fps: float, cameras: tuple[str, ...]) -> None:
        if frames < 1 or not fps > 0:
            raise ValueError(f"a frame history needs frames >= 1 and fps > 0, got {frames} and {fps}")
        self.frames, self.period, self.cameras = frames, 1.0 / fps, cameras
        self._kept: dict[str, deque[CameraFrame]] = {name: deque(maxlen=2 * frames) for name in cameras}
        self._last: float | None = None

    def clear(self) -> None:
        """Forget every kept frame (a new episode: the scene may have been reset)."""
        for kept in self._kept.values():
            kept.clear()
        self._last = None

    def keep(self, robot: RobotInterface, now: float) -> None:
        """Observe and keep the cameras when a frame is due (never with a one-frame history)."""
        if self.frames == 1 or (self._last is not None and now - self._last < self.period - 1e-6):
            return
        self._last = now
        for name, frame in robot.observe(cameras=self.cameras).frames.items():
            kept = self._kept.get(name)
            if kept is not None and (not kept or frame.stamp > kept[-1].stamp):
                kept.append(frame)

    def window(self, newest: dict[str, CameraFrame]) -> dict[str, np.ndarray]:
        """Per camera, (K, H, W, 3): the frames at newest - (K-1)/fps, ..., newest (repeating the oldest usable)."""
        return {name: self._camera_window(name, frame) for name, frame in newest.items()}

    def _camera_window(self, name: str, newest: CameraFrame) -> np.ndarray:
        chosen = [newest.image]
        kept = [f for f in self._kept.get(name, ()) if f.stamp < newest.stamp and f.image.shape == newest.image.shape]
        for k in range(1, self.frames):
            slot = newest.stamp - k * self.period
            best = min(kept, key=lambda f: abs(f.stamp - slot), default=None)
            if best is None or abs(best.stamp - slot) > 0.5 * self.period:
                break
            chosen.append(best.image)
        chosen += [chosen[-1]] * (self.frames - len(chosen))
        return np.stack(chosen[::-1])
