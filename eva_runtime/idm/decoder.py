"""IdmDecoder: the deployment-side IDM on ONNX Runtime (no torch). A whole rollout is decoded in one call.

Loads one `.onnx` file written by `eva export idm`, optionally checks its SHA-256, reads the configuration from
its metadata, and picks execution providers in the order TensorRT, CUDA, CPU among those this ONNX Runtime has;
`provider` reports the one that actually runs (onnxruntime-gpu falls back to CPU silently otherwise). Frames
are validated before anything runs: a wrong camera set, shape, dtype or a non-finite value is a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.windows import stack_windows

__all__ = ["PREFERRED_PROVIDERS", "DecoderError", "IdmDecoder"]

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
FORMAT = "eva-runtime/idm-onnx-v1"


class DecoderError(ValueError):
    """The model file or the frames given to the decoder are not usable."""


class IdmDecoder:
    def __init__(
        self,
        path: Path | str,
        expected_sha256: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        from eva_runtime.onnx_install import installed_onnxruntime

        installed_onnxruntime()  # refuses a broken CPU+GPU double install before loading anything
        self.path = Path(path)
        if not self.path.is_file():
            raise DecoderError(f"{self.path}: no such IDM file")
        data = self.path.read_bytes()
        if expected_sha256 is not None:
            import hashlib

            actual = hashlib.sha256(data).hexdigest()
            if actual != expected_sha256:
                raise DecoderError(
                    f"{self.path}: SHA-256 {actual[:12]}... is not the expected {expected_sha256[:12]}..."
                )
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the CUDA-missing fallback is reported by `provider`, not as log noise
        # One thread that sleeps when idle: the decoder runs in the planner process beside a real-time control loop
        # (and, in simulation, the robot). ONNX Runtime's default is a worker per core that spin-waits after each
        # run; a 37-frame rollout decodes in about 16 ms on one thread (bench/idm.py).
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        wanted = [p for p in (providers or PREFERRED_PROVIDERS) if p in available] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(data, sess_options=options, providers=wanted)
        except Exception as error:  # onnxruntime raises several unrelated types for a bad file
            raise DecoderError(f"{self.path}: not a loadable ONNX model ({error})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if metadata.get("format") != FORMAT:
            raise DecoderError(f"{self.path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
        try:
            self.config = IdmConfig.from_json(metadata["config"])
        except (KeyError, ValueError) as error:  # pydantic's ValidationError is a ValueError
            raise DecoderError(f"{self.path}: IDM configuration missing or invalid in the metadata ({error})") from None
        self.metadata = dict(metadata)
        self.provider = self.session.get_providers()[0]
        self._input = self.session.get_inputs()[0].name

    @property
    def fps(self) -> float:
        return self.config.fps

    def _video(self, frames: Mapping[str, np.ndarray]) -> np.ndarray:
        config = self.config
        missing = [camera for camera in config.cameras if camera not in frames]
        if missing:
            raise DecoderError(f"missing camera(s) {missing}; the IDM decodes {list(config.cameras)}")
        videos = []
        length = None
        for camera in config.cameras:
            video = np.asarray(frames[camera])
            expected = (*config.image_size, 3)
            if video.ndim != 4 or video.shape[1:] != expected:
                raise DecoderError(f"{camera}: frames must be (T, {expected[0]}, {expected[1]}, 3), got {video.shape}")
            if video.dtype != np.uint8:
                if not np.issubdtype(video.dtype, np.floating):
                    raise DecoderError(f"{camera}: frames must be uint8 or float (0..255), got {video.dtype}")
                if video.size == 0:
                    raise DecoderError("no frames to decode")
                if not np.all(np.isfinite(video)):
                    raise DecoderError(f"{camera}: frames contain NaN or infinite values")
                if video.min() < 0 or video.max() > 255:
                    raise DecoderError(f"{camera}: float frames must lie in 0..255")
            if length is not None and len(video) != length:
                raise DecoderError(f"cameras have different frame counts ({length} vs {len(video)} for {camera})")
            length = len(video)
            videos.append(video)
        if not length:
            raise DecoderError("no frames to decode")
        return np.stack(videos)

    def decode(self, frames: Mapping[str, np.ndarray]) -> np.ndarray:
        """camera -> (T, H, W, 3) frames at the IDM's fps -> (T, dof) actions, windows clamped at the edges."""
        pixels = stack_windows(self._video(frames), self.config.window)
        (actions,) = self.session.run(None, {self._input: pixels})
        return actions.astype(np.float64)

    def decode_batch(self, frames: Mapping[str, np.ndarray]) -> np.ndarray:
        """camera -> (G, T, H, W, 3) -> (G, T, dof): G rollouts decoded in a single session run."""
        cameras = self.config.cameras
        missing = [camera for camera in cameras if camera not in frames]
        if missing:
            raise DecoderError(f"missing camera(s) {missing}; the IDM decodes {list(cameras)}")
        shapes = {camera: np.shape(frames[camera])[:2] for camera in cameras}
        if any(len(np.shape(frames[camera])) != 5 for camera in cameras) or len(set(shapes.values())) != 1:
            raise DecoderError(f"decode_batch needs (G, T, H, W, 3) frames, the same G and T per camera; got {shapes}")
        groups, length = shapes[cameras[0]]
        pixels = np.concatenate(
            [
                stack_windows(
                    self._video({c: np.asarray(frames[c])[g] for c in self.config.cameras}), self.config.window
                )
                for g in range(groups)
            ]
        )
        (actions,) = self.session.run(None, {self._input: pixels})
        return actions.reshape(groups, length, -1).astype(np.float64)
