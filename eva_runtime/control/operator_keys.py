"""Operator keys for `eva run`: one letter per line on a text stream (stdin), read on a background thread.

The control loop never waits on the keyboard: keys land in a queue and the loop takes at most one per tick.
Mode keys go through the mode manager's transition table like every other trigger; label keys mark the current
episode's outcome for the episode log (the operator's label overrides the automatic one).
"""

from __future__ import annotations

import queue
import threading
from typing import TextIO

from eva_runtime.control.modes import Trigger

__all__ = ["HELP", "KEYS", "LABELS", "KeyOperator"]

KEYS = {
    "a": Trigger.OPERATOR_AUTONOMOUS,
    "t": Trigger.OPERATOR_TELEOP,
    "h": Trigger.OPERATOR_HOLD,
    "e": Trigger.OPERATOR_ESTOP,
    "r": Trigger.OPERATOR_RELEASE,
    "f": Trigger.OPERATOR_RESET,
}
LABELS = {"s": "success", "x": "failure"}
HELP = (
    "keys + Enter: a autonomous, t teleop, h hold, e ESTOP, r release ESTOP, f reset fault, s/x label success/failure"
)


class KeyOperator:
    def __init__(self, stream: TextIO) -> None:
        self._triggers: queue.Queue[Trigger] = queue.Queue()
        self._label: str | None = None
        self._lock = threading.Lock()
        self.unknown: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            for key in line.strip().lower():
                if key in KEYS:
                    self._triggers.put(KEYS[key])
                elif key in LABELS:
                    with self._lock:
                        self._label = LABELS[key]
                elif not key.isspace():
                    self.unknown.append(key)

    def __call__(self, step: int, now: float) -> Trigger | None:
        """The next pending mode command, if any (the loop's `operator` hook)."""
        try:
            return self._triggers.get_nowait()
        except queue.Empty:
            return None

    def take_label(self) -> str | None:
        """The outcome the operator typed during the episode (cleared once taken)."""
        with self._lock:
            label, self._label = self._label, None
        return label

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
