"""Validation of the outcome log's fields: the counters a running episode updates and the values every row holds,
each refused with the field's name before anything reaches SQLite."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

__all__ = [
    "COUNTERS",
    "TRACKER_PREFIX",
    "checked_choice",
    "checked_number",
    "checked_text",
    "counter_columns",
    "json_mapping",
]

COUNTERS = (
    "teleop_interventions",
    "teleop_seconds",
    "safety_interventions",
    "planning_latency_ms",
    "executability",
    "nominal_interventions",  # {"joint_ticks": n, check: count}: only while executing a plan in AUTONOMOUS
)
# nominal_interventions also holds what the executor's cap tracker changed before the filter, under this prefix
# (control/cap_tracker.py): shaping, not safety, so readers that add up safety interventions leave them out.
TRACKER_PREFIX = "tracker_"
_SUMMARY_KEYS = {
    "planning_latency_ms": ("count", "mean", "p50", "p95", "max"),
    "executability": ("count", "mean", "min", "rejected"),
}
# Written when measured (the executed-motion reward, control/executed_score.py); older rows lack them.
# `expired`: answers that came after their plan's last action (counted since 2026-12-07).
_OPTIONAL_KEYS = {"executability": ("executed_count", "executed_mean", "expired")}
_INTEGER_KEYS = ("count", "rejected", "executed_count", "expired")


def checked_choice(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def checked_text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} must be a non-empty string, got {value!r}")
    return value


def checked_number(field: str, value: object, integer: bool = False) -> float:
    # bool is an int subclass; a True count is a bug upstream, not a count of 1.
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < 0:
        kind = "integer" if integer else "number"
        raise ValueError(f"{field} must be a finite non-negative {kind}, got {value!r}")
    return value


def json_mapping(field: str, value: object) -> str:
    try:
        if isinstance(value, Mapping):
            return json.dumps(dict(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        pass  # reported below, naming the field
    raise ValueError(f"{field} must be a JSON-serialisable mapping, got {value!r}")


def counter_columns(counters: Mapping[str, object]) -> dict[str, object]:
    """Validated counters as column values (JSON text for the dict ones)."""
    columns: dict[str, object] = {}
    for name, value in counters.items():
        if name not in COUNTERS:
            raise ValueError(f"{name} is not a counter (counters: {', '.join(COUNTERS)})")
        if name == "teleop_interventions":
            columns[name] = checked_number(name, value, integer=True)
        elif name == "teleop_seconds":
            columns[name] = float(checked_number(name, value))
        elif name in ("safety_interventions", "nominal_interventions"):
            if not isinstance(value, Mapping):
                raise ValueError(f"{name} must map check name -> count, got {value!r}")
            checks = {
                checked_text(f"{name} key", k): checked_number(f"{name}[{k!r}]", v, integer=True)
                for k, v in value.items()
            }
            columns[name] = json.dumps(checks, sort_keys=True)
        elif value is None:
            columns[name] = None
        else:
            keys, optional = _SUMMARY_KEYS[name], _OPTIONAL_KEYS.get(name, ())
            if not isinstance(value, Mapping) or not set(keys) <= set(value) <= set(keys) | set(optional):
                allowed = f"the keys {', '.join(keys)}" + (f" and optionally {', '.join(optional)}" if optional else "")
                raise ValueError(f"{name} must be a mapping with {allowed}, got {value!r}")
            keys = tuple(keys) + tuple(key for key in optional if key in value)
            summary = {
                key: None if value[key] is None else checked_number(f"{name}.{key}", value[key], key in _INTEGER_KEYS)
                for key in keys
            }
            columns[name] = json.dumps(summary)
    return columns
