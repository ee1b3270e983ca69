"""Configuration of the EVA executability reward: every constant of the formula, validated once, frozen.

The reward scores decoded actions ``A`` (T x D, D = 14 on the bimanual robots) by finite differences at ``dt``:
velocity ``v``, acceleration ``a`` and jerk ``j``. With ``weighted mean`` = mean over all (time, dimension)
elements of ``dimension_weights[d] * value`` (weights normalised to mean 1)::

    P_jerk = wmean Huber(j; delta_j)          P_acc  = wmean Huber(a; delta_a)
    P_vel  = wmean max(|v| - v_max, 0)^2      P_alim = wmean max(|a| - a_max, 0)^2
    P = w_jerk P_jerk + w_acc P_acc + w_vel P_vel + w_alim P_alim

Two reward forms (``form``):

- ``"authors"`` (default, what the EVA authors' code computes): ``R = scale * (1 + P / p0) ** -gamma`` with
  ``scale = 10``, ``p0 = 2000``, ``gamma = 0.5``; a motionless plan scores ``scale``.
- ``"paper"`` (the formula printed in the paper): ``R = ((1 + P) / p0) ** -gamma``; ``scale`` is not used.

Fewer than ``min_steps`` decoded steps gives reward 0. Units: the actions are multiplied by ``gripper_scale``
before differencing (1 on revolute joints; 1 / range on grippers in metres, so grippers move in 0-1 units as the
authors normalised them), and every cap and Huber delta here is in those scaled units.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from eva_runtime.embodiment import Embodiment

__all__ = ["FORMS", "RewardConfig"]

FORMS = ("authors", "paper")
# The authors' gripper weight before normalisation; revolute joints weigh 1.
GRIPPER_WEIGHT = 0.2
_ARRAYS = ("velocity_max", "acceleration_max", "delta_a", "delta_j", "dimension_weights", "gripper_scale")


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"RewardConfig.{name}: expected a number, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"RewardConfig.{name}: must be finite and > 0, got {value}")
    return float(value)


def _vector(name: str, value: Any, dims: int, allow_zero: bool = False) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"RewardConfig.{name}: not a numeric array ({error})") from None
    if arr.shape != (dims,):
        raise ValueError(f"RewardConfig.{name}: expected shape ({dims},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"RewardConfig.{name}: contains NaN or infinite values")
    if np.any(arr < 0) if allow_zero else np.any(arr <= 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"RewardConfig.{name}: every entry must be {bound}, got {arr.tolist()}")
    # Read-only: the config is shared by reward calls and must not change under them.
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class RewardConfig:
    """Constants of the executability reward (see the module docstring for the formula and the two forms).

    ``delta_a`` defaults to ``acceleration_max / 2``, ``delta_j`` to ``(acceleration_max / dt) / 2`` and
    ``dimension_weights`` to 1 on joints and 0.2 on ``gripper_indices``; weights are stored normalised to mean 1.
    Build it with :meth:`from_embodiment` so ``dt`` comes from the world model / IDM fps and the caps from the
    embodiment file.
    """

    dt: float
    velocity_max: np.ndarray
    acceleration_max: np.ndarray
    delta_a: np.ndarray | None = None
    delta_j: np.ndarray | None = None
    dimension_weights: np.ndarray | None = None
    gripper_scale: np.ndarray | None = None
    gripper_indices: tuple[int, ...] = (6, 13)
    w_jerk: float = 0.5
    w_acc: float = 0.25
    w_vel: float = 2.0
    w_alim: float = 1.0
    form: Literal["authors", "paper"] = "authors"
    scale: float = 10.0
    p0: float = 2000.0
    gamma: float = 0.5
    min_steps: int = 4
    dims: int = field(init=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "dt", _positive("dt", self.dt))
        dims = int(np.size(self.velocity_max)) if np.ndim(self.velocity_max) == 1 else -1
        if dims < 1:
            raise ValueError(
                f"RewardConfig.velocity_max: expected a 1-D array, got shape {np.shape(self.velocity_max)}"
            )
        put(self, "dims", dims)
        indices = tuple(self.gripper_indices)
        in_range = all(isinstance(i, int | np.integer) and 0 <= i < dims for i in indices)
        if not in_range or len(set(indices)) != len(indices):
            raise ValueError(f"RewardConfig.gripper_indices: expected distinct indices in [0, {dims}), got {indices}")
        put(self, "gripper_indices", tuple(int(i) for i in indices))
        put(self, "velocity_max", _vector("velocity_max", self.velocity_max, dims))
        put(self, "acceleration_max", _vector("acceleration_max", self.acceleration_max, dims))
        defaults = {
            "delta_a": self.acceleration_max / 2,
            "delta_j": self.acceleration_max / self.dt / 2,
            "dimension_weights": np.where(np.isin(np.arange(dims), indices), GRIPPER_WEIGHT, 1.0),
            "gripper_scale": np.ones(dims),
        }
        for name, default in defaults.items():
            given = getattr(self, name)
            value = default if given is None else given
            put(self, name, _vector(name, value, dims, allow_zero=name == "dimension_weights"))
        weights = self.dimension_weights
        if weights.mean() <= 0:
            raise ValueError("RewardConfig.dimension_weights: at least one weight must be > 0")
        put(self, "dimension_weights", _vector("dimension_weights", weights / weights.mean(), dims, allow_zero=True))
        for name in ("w_jerk", "w_acc", "w_vel", "w_alim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not np.isfinite(value):
                raise ValueError(f"RewardConfig.{name}: expected a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"RewardConfig.{name}: a term weight must be >= 0, got {value}")
            put(self, name, float(value))
        if self.form not in FORMS:
            raise ValueError(f"RewardConfig.form: expected one of {FORMS}, got {self.form!r}")
        for name in ("scale", "p0", "gamma"):
            put(self, name, _positive(name, getattr(self, name)))
        # Jerk needs four samples; fewer would leave a term undefined rather than zero.
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int | np.integer) or self.min_steps < 4:
            raise ValueError(f"RewardConfig.min_steps: expected an integer >= 4, got {self.min_steps!r}")
        put(self, "min_steps", int(self.min_steps))

    @classmethod
    def from_embodiment(cls, embodiment: Embodiment, fps: float, **overrides: Any) -> RewardConfig:
        """Caps from the embodiment, ``dt = 1 / fps`` (the world model / IDM rate), other fields from ``overrides``.

        Grippers in metres get ``gripper_scale = 1 / (max - min)`` of their position range, and their velocity and
        acceleration caps are scaled by the same factor, so every value lives in the normalised units. Array
        overrides (``velocity_max`` ...) are in those scaled units too.
        """
        if "dt" in overrides:
            raise ValueError("RewardConfig.dt: comes from fps in from_embodiment; pass fps, not dt")
        unknown = set(overrides) - {f.name for f in fields(cls) if f.init}
        if unknown:
            raise ValueError(f"RewardConfig: unknown field(s) {sorted(unknown)}")
        if isinstance(fps, bool) or not isinstance(fps, int | float | np.number) or not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"RewardConfig.dt: dt = 1 / fps needs a finite fps > 0, got {fps!r}")
        grippers = embodiment.gripper_mask()
        scale = np.ones(embodiment.dof)
        if embodiment.gripper_units == "m":
            low, high = embodiment.position_limits()
            scale[grippers] = 1.0 / (high - low)[grippers]
        velocity = np.array([j.velocity_max for j in embodiment.joints]) * scale
        acceleration = np.array([j.acceleration_max for j in embodiment.joints]) * scale
        values: dict[str, Any] = {
            "velocity_max": velocity,
            "acceleration_max": acceleration,
            "gripper_scale": scale,
            "gripper_indices": tuple(int(i) for i in np.flatnonzero(grippers)),
        }
        values.update(overrides)
        return cls(dt=1.0 / fps, **values)

    def summary(self) -> dict[str, Any]:
        """Plain values (lists, floats) for YAML/JSON provenance."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out
