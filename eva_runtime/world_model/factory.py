"""Build a world model from a plain spec (paths and numbers only), the one place that knows every kind.

Kinds: `oracle` (test instrument: re-simulates the expert from privileged simulator state), `remote` (a world
model served by `eva serve world-model`, reached over websockets), `wan` (a diffusers Wan model from a local
directory, with LoRA adapters). The planner process, the server and the evaluation commands all build their model
here, so a bundle's manifest means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eva_runtime.world_model.protocol import WorldModel

__all__ = ["WORLD_MODEL_KINDS", "build_world_model"]

WORLD_MODEL_KINDS = ("oracle", "remote", "wan")


def build_world_model(
    spec: Mapping[str, Any],
    *,
    embodiment,
    fps: float,
    cameras: Sequence[str],
    image_size: tuple[int, int],
) -> WorldModel:
    """`fps`, `cameras` and `image_size` are what the IDM decoding the rollouts needs.

    `spec["degrade"]` (the closed-loop ladder's instrument, `degraded.py`) wraps the model in a
    `DegradedWorldModel`."""
    model = _build(spec, embodiment=embodiment, fps=fps, cameras=cameras, image_size=image_size)
    if spec.get("degrade"):
        from eva_runtime.world_model.degraded import Degradation, DegradedWorldModel

        return DegradedWorldModel(model, Degradation(**spec["degrade"]))
    return model


def _build(spec, *, embodiment, fps, cameras, image_size) -> WorldModel:
    kind = spec.get("kind")
    if kind == "oracle":
        from eva_runtime.world_model.artifacts import ArtifactConfig
        from eva_runtime.world_model.oracle import OracleWorldModel

        return OracleWorldModel(
            spec["task"],
            embodiment,
            fps=fps,
            cameras=tuple(cameras),
            image_size=tuple(image_size),
            artifacts=ArtifactConfig(**spec.get("artifacts", {})),
        )
    if kind == "remote":
        from eva_runtime.world_model.serving.client import RemoteWorldModel

        return RemoteWorldModel(spec["url"], token=spec.get("token"), timeout_s=float(spec.get("timeout_s", 10.0)))
    if kind == "wan":
        from eva_runtime.world_model.wan.backend import load_wan_world_model

        return load_wan_world_model(spec)
    raise ValueError(f"world model kind {kind!r} is unknown (allowed: {', '.join(WORLD_MODEL_KINDS)})")
