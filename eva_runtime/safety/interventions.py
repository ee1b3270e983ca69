"""What the safety filter reports: one :class:`Intervention` per joint a check changed, and how they are built.

An adversarial tick changes most joints under several checks, so it makes dozens of records, and building them
was a quarter of such a tick. So a tick keeps each check's raw rows (the check, its joint mask, the values asked
and applied) in an :class:`Interventions` sequence, which builds the records the first time anyone looks at them;
the control loop only counts them per check (:meth:`Interventions.counts`), which needs no record at all. The
filter hands over only arrays it never changes again (copies of the caller's own).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = ["Check", "Intervention", "Interventions", "Report", "intervention", "report_joints"]


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


# What a tick collects while it runs: single records, and the raw rows of the checks that act per joint.
Report = list[Intervention | tuple]


def report_joints(
    out: Report,
    joint_names: tuple[str, ...],
    check: Check,
    mask: np.ndarray,
    asked: np.ndarray,
    got: np.ndarray,
) -> None:
    """Report one record per joint in ``mask``: (check, joint, asked[joint], got[joint]), built later, on demand.
    The arrays must not change afterwards."""
    out.append((check, joint_names, mask, asked, got))


class Interventions(Sequence[Intervention]):
    """One tick's interventions, in the order the checks made them; built into records on first look."""

    __slots__ = ("_items", "_rows")

    def __init__(self, rows: Report) -> None:
        self._rows = rows  # Intervention (a single record) or (check, joint names, mask, asked, got)
        self._items: tuple[Intervention, ...] | None = None

    def counts(self) -> dict[str, int]:
        """Records per check (its value), without building them."""
        counts: dict[str, int] = {}
        for row in self._rows:
            if type(row) is Intervention:
                key, count = row.check.value, 1
            else:
                key, count = row[0].value, int(np.count_nonzero(row[2]))
            counts[key] = counts.get(key, 0) + count
        return counts

    def _built(self) -> tuple[Intervention, ...]:
        if self._items is None:
            items: list[Intervention] = []
            for row in self._rows:
                if type(row) is Intervention:
                    items.append(row)
                else:
                    _build(items, *row)
            self._items = tuple(items)
        return self._items

    def __len__(self) -> int:
        return len(self._built())

    def __getitem__(self, index):  # type: ignore[override]
        return self._built()[index]

    def __iter__(self) -> Iterator[Intervention]:
        return iter(self._built())

    def __bool__(self) -> bool:
        return bool(self._rows)  # a row's mask always holds at least one joint

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return self._built() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Interventions({list(self._built())!r})"


def _build(
    out: list[Intervention],
    check: Check,
    joint_names: tuple[str, ...],
    mask: np.ndarray,
    asked: np.ndarray,
    got: np.ndarray,
) -> None:
    # One tolist() per array is cheaper than a numpy scalar per joint, and gives the same Python floats.
    asked_values, got_values = asked.tolist(), got.tolist()
    append = out.append
    for index in mask.nonzero()[0].tolist():
        # intervention() inlined: a call per record is a measurable share of building them.
        item = _new(Intervention)
        _set_check(item, check)
        _set_joint(item, joint_names[index])
        _set_requested(item, asked_values[index])
        _set_applied(item, got_values[index])
        append(item)
