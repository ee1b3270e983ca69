"""What the safety filter reports: one :class:`Intervention` per joint a check changed, and how they are built.

An adversarial tick changes most joints under several checks, so it makes dozens of records; building them is a
large share of such a tick, and the helpers here make each one as cheaply as Python allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = ["Check", "Intervention", "intervention", "report_joints"]


class Check(StrEnum):
    """Which check intervened. Units of requested/applied follow the check."""

    NON_FINITE_TARGET = "non_finite_target"  # position
    NON_FINITE_MEASURED = "non_finite_measured"  # position
    STALE_INPUT = "stale_input"  # joint = input name; requested = age s, applied = timeout s
    CLOCK = "clock"  # joint = "*"; requested = tick interval s, applied = interval used s
    TRACKING_ERROR = "tracking_error"  # requested = measured position, applied = previous command
    POSITION_LIMIT = "position_limit"  # target position before/after the clamp
    VELOCITY = "velocity"  # velocity before/after group scaling
    ACCELERATION = "acceleration"  # acceleration before/after group scaling
    BRAKING = "braking"  # velocity before/after the stopping-distance bound
    HARD_LIMIT = "hard_limit"  # position: last-resort clamp (only reachable from an infeasible reset)


@dataclass(frozen=True, slots=True)
class Intervention:
    check: Check
    joint: str
    requested: float
    applied: float


# A frozen dataclass's __init__ sets each field through object.__setattr__; writing the slots directly makes the
# same object in about half the time. Safe because Intervention has no __post_init__ and no validation to skip.
_new = object.__new__
_set_check = Intervention.check.__set__  # type: ignore[attr-defined]
_set_joint = Intervention.joint.__set__  # type: ignore[attr-defined]
_set_requested = Intervention.requested.__set__  # type: ignore[attr-defined]
_set_applied = Intervention.applied.__set__  # type: ignore[attr-defined]


def intervention(check: Check, joint: str, requested: float, applied: float) -> Intervention:
    """``Intervention(check, joint, requested, applied)``, built without the frozen-dataclass overhead."""
    item = _new(Intervention)
    _set_check(item, check)
    _set_joint(item, joint)
    _set_requested(item, requested)
    _set_applied(item, applied)
    return item


def report_joints(
    out: list[Intervention],
    joint_names: tuple[str, ...],
    check: Check,
    mask: np.ndarray,
    asked: np.ndarray,
    got: np.ndarray,
) -> None:
    """Append one record per joint in ``mask``: (check, joint, asked[joint], got[joint])."""
    # One tolist() per array is cheaper than a numpy scalar per joint, and gives the same Python floats.
    asked_values, got_values = asked.tolist(), got.tolist()
    append = out.append
    for index in mask.nonzero()[0].tolist():
        # intervention() inlined: a call per record is a measurable share of an adversarial tick.
        item = _new(Intervention)
        _set_check(item, check)
        _set_joint(item, joint_names[index])
        _set_requested(item, asked_values[index])
        _set_applied(item, got_values[index])
        append(item)
