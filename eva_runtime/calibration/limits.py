"""Per-joint velocity, acceleration and jerk caps estimated from demonstration actions, and their YAML record.

Each cap is a high percentile of |finite difference| over all demonstrations (at each episode's own fps), times a
margin, never above the embodiment's hard cap. A joint the data barely moves keeps a floor (a fraction of the
hard cap) so a later policy is not forbidden to move it at all. Values are in the embodiment's units (grippers in
metres on a robot with ``gripper_units: m``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from eva_runtime.config_files import ConfigFileError, load_yaml, validate
from eva_runtime.embodiment import Embodiment, JointSpec
from eva_runtime.records.hdf5_episodes import Episode, dataset_digest, read_episode

__all__ = ["EpisodeSource", "calibrate_limits", "read_limits_yaml", "write_limits_yaml"]

# An episode, an episode file, or (actions (N, D), fps).
EpisodeSource = Episode | Path | str | tuple[np.ndarray, float]
QUANTITIES = ("velocity", "acceleration", "jerk")
FORMAT = "eva-runtime/limits-v1"


PositiveCap = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]


class JointCaps(BaseModel):
    """One joint's caps in a limits file; other keys (``sources``) are provenance and pass through."""

    model_config = ConfigDict(extra="allow")
    velocity_max: PositiveCap
    acceleration_max: PositiveCap
    jerk_max: PositiveCap


class LimitsFile(BaseModel):
    """What :func:`read_limits_yaml` checks of a limits file; it returns the parsed mapping itself."""

    model_config = ConfigDict(extra="allow")
    format: str  # checked against FORMAT first, with its own message
    joints: dict[str, JointCaps] = Field(default_factory=dict)


def _number(value: object) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool) and bool(np.isfinite(value))


def _load(
    sources: Sequence[EpisodeSource], embodiment: Embodiment
) -> tuple[list[tuple[np.ndarray, float]], list[Path]]:
    loaded: list[tuple[np.ndarray, float]] = []
    paths: list[Path] = []
    for index, source in enumerate(sources):
        if isinstance(source, str | Path):
            paths.append(Path(source))
            source = read_episode(source, load_images=False)
        if isinstance(source, Episode):
            # Limits of one robot fitted on another robot's data is a failure seen in the EVA authors' code.
            if source.embodiment != embodiment.name or source.joint_names != embodiment.joint_names:
                raise ValueError(
                    f"episode {index}: recorded on {source.embodiment!r} with joints {list(source.joint_names)}, "
                    f"not on {embodiment.name!r} with {list(embodiment.joint_names)}"
                )
            loaded.append((source.action, source.fps))
            continue
        actions, fps = source
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != embodiment.dof:
            raise ValueError(f"episode {index}: expected actions of shape (N, {embodiment.dof}), got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError(f"episode {index}: actions contain NaN or infinite values")
        if not (_number(fps) and fps > 0):
            raise ValueError(f"episode {index}: fps must be a finite number > 0, got {fps!r}")
        loaded.append((actions, float(fps)))
    return loaded, paths


def _differences(actions: np.ndarray, fps: float) -> dict[str, np.ndarray]:
    velocity = np.diff(actions, axis=0) * fps
    acceleration = np.diff(velocity, axis=0) * fps
    return {"velocity": velocity, "acceleration": acceleration, "jerk": np.diff(acceleration, axis=0) * fps}


def calibrate_limits(
    episodes: Sequence[EpisodeSource],
    embodiment: Embodiment,
    percentile: float = 99.5,
    margin: float = 1.2,
    floor_fraction: float = 0.05,
    data_digest: str | None = None,
) -> dict[str, Any]:
    """Estimate per-joint caps; return a plain dict (``joints`` plus provenance) ready for :func:`write_limits_yaml`.

    Episodes given as files are digested with :func:`dataset_digest`; for in-memory episodes pass ``data_digest``
    (or it stays ``None``). A joint without a hard jerk cap uses ``(acceleration_max * fps) / 2`` at the highest
    episode fps (the reward's default jerk scale) as the reference for its floor, and its jerk is not capped.
    Each value records its source: ``data``, ``hard_cap`` (the estimate was above it) or ``floor``.
    """
    _check_options(percentile, margin, floor_fraction)
    loaded, paths = _load(episodes, embodiment)
    if not loaded:
        raise ValueError("calibrate_limits needs at least one episode")
    stacked = _pooled_differences(loaded)
    if paths and len(paths) == len(loaded) and data_digest is None:
        data_digest = dataset_digest(paths)
    top_fps = max(fps for _, fps in loaded)
    joints = {
        joint.name: _joint_caps(
            joint, {n: v[:, index] for n, v in stacked.items()}, percentile, margin, floor_fraction, top_fps
        )
        for index, joint in enumerate(embodiment.joints)
    }
    return {
        "format": FORMAT,
        "embodiment": embodiment.name,
        "percentile": float(percentile),
        "margin": float(margin),
        "floor_fraction": float(floor_fraction),
        "episodes": len(loaded),
        "samples": {"frames": sum(len(a) for a, _ in loaded), **{n: int(stacked[n].shape[0]) for n in QUANTITIES}},
        "fps": sorted({fps for _, fps in loaded}),
        "data_digest": data_digest,
        "data_files": [str(p) for p in paths],
        "joints": joints,
    }


def _check_options(percentile: float, margin: float, floor_fraction: float) -> None:
    """Refuse a percentile, margin or floor fraction outside its range."""
    if not (_number(percentile) and 0 < percentile <= 100):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    if not (_number(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    # A zero floor would let a still joint's cap be 0: a policy could then never move it.
    if not (_number(floor_fraction) and 0 < floor_fraction <= 1):
        raise ValueError(f"floor_fraction must be in (0, 1], got {floor_fraction!r}")


def _pooled_differences(loaded: list[tuple[np.ndarray, float]]) -> dict[str, np.ndarray]:
    """|velocity|, |acceleration| and |jerk| samples of every episode, stacked per quantity (N, D)."""
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in QUANTITIES}
    for actions, fps in loaded:
        for name, values in _differences(actions, fps).items():
            pooled[name].append(np.abs(values))
    stacked = {name: np.concatenate(parts, axis=0) for name, parts in pooled.items()}
    for name, values in stacked.items():
        if values.shape[0] == 0:
            raise ValueError(f"no {name} samples: episodes need at least 4 frames for jerk, 3 for acceleration")
    return stacked


def _joint_caps(
    joint: JointSpec,
    samples: dict[str, np.ndarray],
    percentile: float,
    margin: float,
    floor_fraction: float,
    top_fps: float,
) -> dict[str, Any]:
    """One joint's caps from its pooled samples, each with its source (data, hard_cap or floor)."""
    hard = {
        "velocity": joint.velocity_max,
        "acceleration": joint.acceleration_max,
        "jerk": joint.jerk_max,
    }
    reference = {**hard, "jerk": joint.jerk_max or joint.acceleration_max * top_fps / 2}
    entry: dict[str, Any] = {"sources": {}}
    for name in QUANTITIES:
        estimate = float(np.percentile(samples[name], percentile)) * margin
        floor = floor_fraction * reference[name]
        if hard[name] is not None and estimate > hard[name]:
            value, source = float(hard[name]), "hard_cap"
        elif estimate < floor:
            value, source = floor, "floor"
        else:
            value, source = estimate, "data"
        entry[f"{name}_max"] = value
        entry["sources"][name] = source
    return entry


def write_limits_yaml(path: Path | str, result: dict[str, Any]) -> Path:
    """Write a :func:`calibrate_limits` result: provenance first, then one line of caps per joint."""
    from eva_runtime import __version__

    missing = {"format", "embodiment", "joints", "data_digest", "percentile", "margin", "episodes", "samples"} - set(
        result
    )
    if missing:
        raise ValueError(f"not a calibrate_limits result: missing {sorted(missing)}")
    provenance = {key: value for key, value in result.items() if key not in ("format", "embodiment", "joints")}
    document = {
        "format": result["format"],
        "embodiment": result["embodiment"],
        "provenance": {**provenance, "eva_runtime_version": __version__},
        "joints": result["joints"],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Joint caps estimated from demonstrations by `eva calibrate limits`; units as in the embodiment file.\n"
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, width=120), encoding="utf-8")
    return path


def read_limits_yaml(path: Path | str) -> dict[str, Any]:
    """Read a file written by :func:`write_limits_yaml`; refuse anything else (errors as ``file: key: problem``)."""
    data = load_yaml(path, what="limits file")
    if data.get("format") != FORMAT:
        found = data.get("format")
        raise ConfigFileError(f"{path}: format: not a limits file (expected format {FORMAT!r}, got {found!r})")
    validate(Path(path), LimitsFile, data)
    return data
